"""Options several verbs share, declared once, and the plain functions behind a stage verb.

A shared option is an `Annotated` alias (`config: ConfigFile = None`). Options that always travel
together are a group: a function whose signature declares them and whose body turns their values into
the one object the verb receives; `@option_group(into, group)` puts the group's options into the verb's
signature where the parameter `into` stands (typer, like click, reads only the signature).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

ConfigFile = Annotated[Path, typer.Option("-c", "--config", help="Chain file (YAML).")]
Sets = Annotated[list[str], typer.Option("--set", help="Override a field: --set stages.finetune.lr=1e-4 (repeatable).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the exact jobs and exit; runs nothing.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ShowFiles = Annotated[bool, typer.Option("--show-files", help="With --dry-run: print rendered files in full.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Do not stream job output (logs still written).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Print each job's command line before it starts.")]
# Launch flags: shorthands for `--set stages.<stage>.launcher.…` on every stage the command runs.
Launcher = Annotated[str, typer.Option("--launcher", help="How jobs start: local, torchrun or slurm.")]
Nnodes = Annotated[int, typer.Option("--nnodes", help="Nodes for distributed jobs (torchrun/slurm).")]
NprocPerNode = Annotated[int, typer.Option("--nproc-per-node", help="Processes (GPUs) per node for distributed jobs.")]
Partition = Annotated[str, typer.Option("--partition", help="Slurm partition.")]


def option_group(into: str, group: Callable) -> Callable:
    """Decorate a verb: `group`'s parameters replace the verb's parameter `into` (same place in --help),
    and the verb is called with `into=group(**their values)`."""

    def decorate(verb: Callable) -> Callable:
        group_params = list(inspect.signature(group, eval_str=True).parameters.values())
        names = [p.name for p in group_params]
        signature = inspect.signature(verb, eval_str=True)
        params = [q for p in signature.parameters.values() for q in (group_params if p.name == into else [p])]

        @functools.wraps(verb)
        def wrapper(**kwargs):
            kwargs[into] = group(**{name: kwargs.pop(name) for name in names})
            return verb(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper

    return decorate


@dataclass(frozen=True)
class StageRun:
    """What every stage verb is told: which chain file, its overrides, and how to show the result."""

    config: Path | None
    sets: list[str]
    dry_run: bool
    as_json: bool
    show_files: bool


def stage_run_options(config: ConfigFile = None, sets: Sets = None, dry_run: DryRun = False, as_json: Json = False,
                      show_files: ShowFiles = False) -> StageRun:
    return StageRun(config, sets or [], dry_run, as_json, show_files)


def launch_options(launcher: Launcher = None, nnodes: Nnodes = None, nproc_per_node: NprocPerNode = None,
                   partition: Partition = None) -> dict:
    """The launch flags, as the keyword arguments of `launch_sets`."""
    return {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": nproc_per_node, "partition": partition}


def require_config(config: Path | None, verb: str) -> Path:
    if config is None:
        from internlm_chain.errors import ChainError, Problem

        raise ChainError(Problem(f"`ichain {verb}` needs a chain file", hint="pass -c FILE, e.g. -c configs/quickstart.yaml"))
    return config


def launch_sets(stages: Sequence[str], launcher: str | None = None, nnodes: int | None = None,
                nproc_per_node: int | None = None, partition: str | None = None) -> list[str]:
    """The launch flags as `--set` overrides of each stage's `launcher:` (they win over the file's)."""
    from typing import get_args

    from internlm_chain.config.base import LauncherSettings
    from internlm_chain.config.merge import FlagOverride
    from internlm_chain.errors import ChainError, Problem

    kinds = get_args(LauncherSettings.model_fields["kind"].annotation)
    if launcher is not None and launcher not in kinds:  # once, not once per stage it would apply to
        raise ChainError(Problem(f"'{launcher}' is not a launcher", path="--launcher", hint=", ".join(kinds)))
    fields = {"kind": ("--launcher", launcher), "nnodes": ("--nnodes", nnodes),
              "nproc_per_node": ("--nproc-per-node", nproc_per_node), "slurm.partition": ("--partition", partition)}
    return [FlagOverride(f"stages.{stage}.launcher.{name}={value}", flag) for stage in stages
            for name, (flag, value) in fields.items() if value is not None]


def load_with_launch_flags(path: Path, sets: Sequence[str], stages: Sequence[str] | None = None, **flags):
    """Load the chain; with launch flags, load it again with them applied to `stages` (default: enabled)."""
    from internlm_chain.config.loader import load_chain

    loaded = load_chain(path, list(sets))
    extra = launch_sets(stages if stages is not None else loaded.config.enabled_stages(), **flags)
    return load_chain(path, [*sets, *extra]) if extra else loaded


def run_stage(loaded, stage: str, run: StageRun, *, quiet: bool = False) -> None:
    """Run one stage of a loaded chain (with --dry-run: print its jobs), as every stage verb does."""
    from internlm_chain.chain.runner import run_chain

    run_chain(loaded, only=[stage], dry_run=run.dry_run, as_json=run.as_json, show_files=run.show_files,
              explicit=True, quiet=quiet)


def stage_verb(stage: str, run: StageRun, *, quiet: bool = False, launch: dict | None = None) -> None:
    """What `ichain <stage> -c FILE` does: load the chain file, then `run_stage`."""
    loaded = load_with_launch_flags(require_config(run.config, stage), run.sets, [stage], **(launch or {}))
    run_stage(loaded, stage, run, quiet=quiet)
