"""Options shared by every stage verb and `ichain run`, and the plain function behind a stage verb."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

ConfigOpt = typer.Option(None, "-c", "--config", help="Chain file (YAML).", exists=False)
SetOpt = typer.Option(None, "--set", help="Override a field: --set stages.finetune.lr=1e-4 (repeatable).")
DryRunOpt = typer.Option(False, "--dry-run", help="Print the exact jobs and exit; runs nothing.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
ShowFilesOpt = typer.Option(False, "--show-files", help="With --dry-run: print rendered files in full.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Do not stream job output (logs still written).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Print each job's command line before it starts.")
# Launch flags: shorthands for `--set stages.<stage>.launcher.…` on every stage the command runs.
LauncherOpt = typer.Option(None, "--launcher", help="How jobs start: local, torchrun or slurm.")
NnodesOpt = typer.Option(None, "--nnodes", help="Nodes for distributed jobs (torchrun/slurm).")
NprocOpt = typer.Option(None, "--nproc-per-node", help="Processes (GPUs) per node for distributed jobs.")
PartitionOpt = typer.Option(None, "--partition", help="Slurm partition.")


def require_config(config: Path | None, verb: str) -> Path:
    if config is None:
        from internlm_chain.errors import ChainError, Problem

        raise ChainError(Problem(f"`ichain {verb}` needs a chain file", hint="pass -c FILE, e.g. -c configs/quickstart.yaml"))
    return config


def launch_sets(stages: Sequence[str], launcher: str | None = None, nnodes: int | None = None,
                nproc_per_node: int | None = None, partition: str | None = None) -> list[str]:
    """The launch flags as `--set` overrides of each stage's `launcher:` (they win over the file's)."""
    fields = {"kind": launcher, "nnodes": nnodes, "nproc_per_node": nproc_per_node, "slurm.partition": partition}
    return [f"stages.{stage}.launcher.{name}={value}" for stage in stages
            for name, value in fields.items() if value is not None]


def load_with_launch_flags(path: Path, sets: Sequence[str], stages: Sequence[str] | None = None, **flags):
    """Load the chain; with launch flags, load it again with them applied to `stages` (default: enabled)."""
    from internlm_chain.config.loader import load_chain

    loaded = load_chain(path, list(sets))
    extra = launch_sets(stages if stages is not None else loaded.config.enabled_stages(), **flags)
    return load_chain(path, [*sets, *extra]) if extra else loaded


def stage_verb(stage: str, config: Path | None, sets: list[str] | None, dry_run: bool, as_json: bool,
               show_files: bool, *, quiet: bool = False, verbose: bool = False, launcher: str | None = None,
               nnodes: int | None = None, nproc_per_node: int | None = None, partition: str | None = None) -> None:
    """What `ichain <stage> -c FILE` does: dry-run prints the jobs, otherwise the runner runs that stage."""
    from internlm_chain.chain.runner import run_chain

    loaded = load_with_launch_flags(require_config(config, stage), sets or [], [stage], launcher=launcher,
                                    nnodes=nnodes, nproc_per_node=nproc_per_node, partition=partition)
    run_chain(loaded, only=[stage], dry_run=dry_run, as_json=as_json, show_files=show_files, explicit=True,
              quiet=quiet, verbose=verbose)
