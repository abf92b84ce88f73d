"""The chain file's top-level model."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from internlm_chain.config.base import Device, LauncherSettings, RuntimeSpec, StrictModel, Variant
from internlm_chain.stages.agent.settings import AgentSettings
from internlm_chain.stages.data.settings import DataSettings
from internlm_chain.stages.deploy.settings import DeploySettings
from internlm_chain.stages.eval.settings import EvalSettings
from internlm_chain.stages.finetune.settings import FinetuneSettings
from internlm_chain.stages.pretrain.settings import PretrainSettings


class ModelSpec(StrictModel):
    path: str | None = Field(None, description="Base model: a local directory (or a stage reference).")
    tokenizer: str | None = Field(None, description="Tokenizer directory; defaults to `path`.")
    chat_template: str = Field(
        "internlm2_chat", description="Prompt template name (XTuner's names), shared by every stage."
    )


class RuntimesSettings(StrictModel):
    cache_dir: str | None = Field(
        None, description="Where synced runtimes live. Default: $ICHAIN_CACHE or ~/.cache/internlm-chain."
    )
    variant: Variant | None = Field(None, description="Lock variant for every runtime; default follows `device`.")
    overrides: dict[str, RuntimeSpec] = Field(
        default_factory=dict, description="Per runtime name (xtuner, opencompass, ...): where it lives instead."
    )


class StagesConfig(StrictModel):
    data: DataSettings | None = None
    pretrain: PretrainSettings | None = None
    finetune: FinetuneSettings | None = None
    eval: EvalSettings | None = None
    deploy: DeploySettings | None = None
    agent: AgentSettings | None = None


class ChainConfig(StrictModel):
    name: str = Field(description="Chain name; letters, digits, '-', '_' and '.'.")
    workdir: str | None = Field(
        None, description="Where outputs go, relative to the chain file's folder. Default: runs/<name>."
    )
    device: Device = Field("auto", description="auto: cuda when nvidia-smi sees a GPU, else cpu.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    runtimes: RuntimesSettings = Field(default_factory=RuntimesSettings)
    launcher: LauncherSettings = Field(default_factory=LauncherSettings)
    stages: StagesConfig = Field(default_factory=StagesConfig)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")
        return v

    def enabled_stages(self) -> list[str]:
        from internlm_chain.stages import STAGE_ORDER

        return [s for s in STAGE_ORDER if (cfg := getattr(self.stages, s)) is not None and cfg.enabled]
