"""`ichain env sync|list|doctor`: the per-stage locked runtimes."""

from __future__ import annotations

import typer

app = typer.Typer(help="Create and inspect the per-stage locked runtimes.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """Runtimes, their variant, path, whether synced, lock hash and size."""
    from internlm_chain.errors import ChainError

    raise ChainError("`ichain env` is not available yet in this version")
