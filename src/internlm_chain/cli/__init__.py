"""The `ichain` command line: one small module per verb."""
