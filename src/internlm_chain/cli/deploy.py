"""`ichain deploy`."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import ConfigOpt, DryRunOpt, JsonOpt, SetOpt, ShowFilesOpt, stage_verb

app = typer.Typer(help="Serve models with LMDeploy (a CPU stand-in without a GPU).", no_args_is_help=True)


@app.command("serve")
def serve(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
) -> None:
    """Run the deploy stage of a chain file."""
    stage_verb("deploy", config, sets, dry_run, as_json, show_files)
