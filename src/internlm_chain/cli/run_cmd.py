"""`ichain run FILE`: the whole chain (or a slice of it), skipping what is up to date."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import (
    DryRun,
    Json,
    Quiet,
    Sets,
    ShowFiles,
    Verbose,
    launch_options,
    option_group,
)


@option_group("launch", launch_options)
def run(
    file: Path = typer.Argument(None, help="Chain file.", show_default=False),
    config: Path = typer.Option(None, "-c", "--config", help="Chain file (same as the argument)."),
    sets: Sets = None,
    from_: str = typer.Option(None, "--from", help="Start at this stage."),
    to: str = typer.Option(None, "--to", help="Stop after this stage."),
    only: str = typer.Option(None, "--only", help="Comma-separated stages to run."),
    force: bool = typer.Option(False, "--force", help="Re-run selected stages even if up to date."),
    dry_run: DryRun = False,
    as_json: Json = False,
    show_files: ShowFiles = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    launch: dict = None,
) -> None:
    """Run the chain's stages in order; completed stages with unchanged inputs are skipped."""
    from internlm_chain.chain.runner import run_chain, select_stages
    from internlm_chain.cli.common import load_with_launch_flags, require_config
    from internlm_chain.config.loader import load_chain

    path = require_config(file or config, "run")
    only_list = [s.strip() for s in only.split(",") if s.strip()] if only else None
    loaded = load_chain(path, sets or [])
    if any(v is not None for v in launch.values()):
        selected = select_stages(loaded, only_list, from_, to)
        loaded = load_with_launch_flags(path, sets or [], selected, **launch)
    run_chain(loaded, only=only_list, from_=from_, to=to, force=force, dry_run=dry_run, as_json=as_json,
              show_files=show_files, quiet=quiet, verbose=verbose)
