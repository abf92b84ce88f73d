"""`ichain data run|report`: the corpus pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import ConfigOpt, DryRunOpt, JsonOpt, SetOpt, ShowFilesOpt, stage_verb

app = typer.Typer(help="Clean, filter, de-duplicate and tokenize a zh/en corpus.", no_args_is_help=True)


@app.command("run")
def run(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
) -> None:
    """Run the data stage of a chain file."""
    stage_verb("data", config, sets, dry_run, as_json, show_files)
