"""`ichain pretrain`: InternEvo pre-training (and `--validate`: check the rendered config only)."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    LauncherOpt,
    NnodesOpt,
    NprocOpt,
    PartitionOpt,
    QuietOpt,
    SetOpt,
    ShowFilesOpt,
    stage_verb,
)

ValidateOpt = typer.Option(False, "--validate", help="Render the InternEvo config and check it with InternEvo's "
                                                     "loader and sanity rules for the world size; runs nothing.")


def pretrain(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    validate: bool = ValidateOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
    quiet: bool = QuietOpt,
    launcher: str = LauncherOpt,
    nnodes: int = NnodesOpt,
    nproc_per_node: int = NprocOpt,
    partition: str = PartitionOpt,
) -> None:
    """Run the pretrain stage of a chain file (InternEvo; CPU: smoke mode on a tiny model)."""
    flags = dict(launcher=launcher, nnodes=nnodes, nproc_per_node=nproc_per_node, partition=partition)
    if validate:
        from internlm_chain.stages.pretrain.check import validate_with_upstream

        validate_with_upstream(config, sets or [], as_json=as_json, **flags)
        return
    stage_verb("pretrain", config, sets, dry_run, as_json, show_files, quiet=quiet, **flags)
