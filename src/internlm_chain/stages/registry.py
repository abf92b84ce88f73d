"""Find a stage's implementation lazily, so `ichain --help` imports none of them."""

from __future__ import annotations

import importlib

from internlm_chain.stages import STAGE_ORDER
from internlm_chain.stages.base import NotAvailableStage, Stage


def get_stage(name: str) -> Stage:
    if name not in STAGE_ORDER:
        raise KeyError(name)
    try:
        module = importlib.import_module(f"internlm_chain.stages.{name}.stage")
    except ModuleNotFoundError as exc:
        if exc.name == f"internlm_chain.stages.{name}.stage":
            return NotAvailableStage(name)
        raise
    return module.STAGE
