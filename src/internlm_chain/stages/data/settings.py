"""`stages.data`: the offline zh/en corpus pipeline."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from internlm_chain.config.base import StageSettings


class DataSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("clean", "internevo", "xtuner", "sft", "tokenizer", "report")

    inputs: list[str] = Field(default_factory=list, description="Input files or directories.")
    languages: list[str] = Field(default_factory=lambda: ["zh", "en"])
    text_key: str = "text"
