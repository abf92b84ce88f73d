"""Per-stage locked runtimes: where upstream code is installed and how to call its Python."""
