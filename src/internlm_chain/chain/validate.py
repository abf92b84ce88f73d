"""Whole-chain validation: schema and references (loader), then each enabled stage's own rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from internlm_chain.config.loader import LoadedChain, load_chain
from internlm_chain.errors import Problem


def validate_chain(path: Path, overrides: Sequence[str] = ()) -> tuple[LoadedChain, list[Problem]]:
    """Schema errors raise; stage-level problems of every enabled stage are collected and returned."""
    from internlm_chain.chain.planner import Planner

    loaded = load_chain(path, overrides)
    planner = Planner(loaded)
    problems: list[Problem] = []
    for stage in loaded.config.enabled_stages():
        problems += planner.validate_stage(stage)
    return loaded, drop_echoes(problems)


def drop_echoes(problems: list[Problem]) -> list[Problem]:
    """One error per cause: an unresolved reference at a field another problem already explains goes."""
    from internlm_chain.chain.planner import MissingReference

    explained = {p.path for p in problems if not isinstance(p, MissingReference)}
    return [p for p in problems if not (isinstance(p, MissingReference) and p.path in explained)]
