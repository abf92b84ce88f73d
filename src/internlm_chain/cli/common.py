"""Options shared by every stage verb and `ichain run`, and the plain function behind a stage verb."""

from __future__ import annotations

from pathlib import Path

import typer

ConfigOpt = typer.Option(None, "-c", "--config", help="Chain file (YAML).", exists=False)
SetOpt = typer.Option(None, "--set", help="Override a field: --set stages.finetune.lr=1e-4 (repeatable).")
DryRunOpt = typer.Option(False, "--dry-run", help="Print the exact jobs and exit; runs nothing.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
ShowFilesOpt = typer.Option(False, "--show-files", help="With --dry-run: print rendered files in full.")


def require_config(config: Path | None, verb: str) -> Path:
    if config is None:
        from internlm_chain.errors import ChainError, Problem

        raise ChainError(Problem(f"`ichain {verb}` needs a chain file", hint="pass -c FILE, e.g. -c configs/quickstart.yaml"))
    return config


def stage_verb(stage: str, config: Path | None, sets: list[str] | None, dry_run: bool, as_json: bool,
               show_files: bool) -> None:
    """What `ichain <stage> -c FILE` does: dry-run prints the jobs, otherwise the runner runs that stage."""
    from internlm_chain.chain.runner import run_chain
    from internlm_chain.config.loader import load_chain

    loaded = load_chain(require_config(config, stage), sets or [])
    run_chain(loaded, only=[stage], dry_run=dry_run, as_json=as_json, show_files=show_files, explicit=True)
