"""`ichain eval`: OpenCompass evaluation."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import ConfigOpt, DryRunOpt, JsonOpt, SetOpt, ShowFilesOpt, stage_verb

app = typer.Typer(help="Evaluate models and endpoints with OpenCompass.", invoke_without_command=True)


@app.callback()
def eval_(
    ctx: typer.Context,
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
) -> None:
    """Run the eval stage of a chain file."""
    if ctx.invoked_subcommand is None:
        stage_verb("eval", config, sets, dry_run, as_json, show_files)
