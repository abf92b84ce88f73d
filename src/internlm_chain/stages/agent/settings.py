"""`stages.agent`: Lagent + AgentLego agents."""

from __future__ import annotations

from typing import ClassVar

from internlm_chain.config.base import StageSettings


class AgentSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("transcript", "bench")
