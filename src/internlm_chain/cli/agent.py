"""`ichain agent`."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import ConfigOpt, DryRunOpt, JsonOpt, SetOpt, ShowFilesOpt, stage_verb

app = typer.Typer(help="Run Lagent agents with AgentLego tools.", no_args_is_help=True)


@app.command("run")
def run(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
) -> None:
    """Run the agent stage of a chain file."""
    stage_verb("agent", config, sets, dry_run, as_json, show_files)
