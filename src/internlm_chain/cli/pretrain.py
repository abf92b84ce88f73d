"""`ichain pretrain`."""

from __future__ import annotations

from pathlib import Path

from internlm_chain.cli.common import ConfigOpt, DryRunOpt, JsonOpt, SetOpt, ShowFilesOpt, stage_verb


def pretrain(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
) -> None:
    """Run the pretrain stage of a chain file."""
    stage_verb("pretrain", config, sets, dry_run, as_json, show_files)
