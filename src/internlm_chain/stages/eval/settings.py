"""`stages.eval`: OpenCompass evaluation."""

from __future__ import annotations

from typing import ClassVar

from internlm_chain.config.base import StageSettings


class EvalSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("report",)
