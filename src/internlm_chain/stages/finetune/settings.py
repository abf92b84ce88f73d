"""`stages.finetune`: XTuner fine-tuning."""

from __future__ import annotations

from typing import ClassVar

from internlm_chain.config.base import StageSettings


class FinetuneSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("checkpoint", "adapter", "model")
