"""`stages.pretrain`: InternEvo pre-training."""

from __future__ import annotations

from typing import ClassVar

from internlm_chain.config.base import StageSettings


class PretrainSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("checkpoint", "model")
