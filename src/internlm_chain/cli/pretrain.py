"""`ichain pretrain`: InternEvo pre-training (and `--validate`: check the rendered config only)."""

from __future__ import annotations

import typer

from internlm_chain.cli.common import (
    ConfigFile,
    DryRun,
    Json,
    Quiet,
    Sets,
    ShowFiles,
    StageRun,
    launch_options,
    option_group,
    stage_verb,
)


@option_group("launch", launch_options)
def pretrain(
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    validate: bool = typer.Option(False, "--validate", help="Render the InternEvo config and check it with "
                                  "InternEvo's loader and sanity rules for the world size; runs nothing."),
    as_json: Json = False,
    show_files: ShowFiles = False,
    quiet: Quiet = False,
    launch: dict = None,
) -> None:
    """Run the pretrain stage of a chain file (InternEvo; CPU: smoke mode on a tiny model)."""
    if validate:
        from internlm_chain.stages.pretrain.check import validate_with_upstream

        validate_with_upstream(config, sets or [], as_json=as_json, **launch)
        return
    stage_verb("pretrain", StageRun(config, sets or [], dry_run, as_json, show_files), quiet=quiet, launch=launch)
