"""`stages.deploy`: LMDeploy serving (CPU stand-in without a GPU)."""

from __future__ import annotations

from typing import ClassVar

from internlm_chain.config.base import StageSettings


class DeploySettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("endpoint",)
