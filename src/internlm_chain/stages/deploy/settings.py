"""`stages.deploy`: LMDeploy serving (CPU stand-in without a GPU)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from internlm_chain.config.base import StageSettings, StrictModel

Backend = Literal["auto", "turbomind", "pytorch", "transformers"]
CalibDataset = Literal["pileval", "wikitext2", "c4", "ptb"]


class ProxySettings(StrictModel):
    """Several api_servers behind `lmdeploy serve proxy` (one per node × servers_per_node)."""

    enabled: bool = Field(False, description="Put the api_servers behind LMDeploy's proxy.")
    host: str = Field("127.0.0.1", description="Address the proxy listens on and the api_servers register "
                                               "with; on several nodes it must be reachable from all of them "
                                               "(default there: the first node of the allocation).")
    port: int = Field(8000, ge=1, le=65535, description="The proxy's port: the endpoint clients use.")
    nodes: int = Field(1, ge=1, description="Nodes with api_servers (more than one needs the slurm launcher).")
    servers_per_node: int = Field(1, ge=1, description="api_servers per node, each on `tp` GPUs of its own.")
    routing_strategy: Literal["min_expected_latency", "min_observed_latency", "random"] = "min_expected_latency"


class QuantizeSettings(StrictModel):
    """Weight quantisation with `lmdeploy lite` before serving (GPU only)."""

    enabled: bool = Field(False, description="Quantise the model, then serve the quantised one.")
    method: Literal["awq", "smooth_quant"] = Field("awq", description="awq: 4-bit weights; smooth_quant: W8A8.")
    calib_dataset: CalibDataset = Field("pileval", description="LMDeploy's calibration set name.")
    calib_data: str | None = Field(
        None, description="A local Hugging Face cache directory holding `calib_dataset` (quantisation runs "
                          "offline; LMDeploy would otherwise download it).")
    calib_samples: int = Field(128, ge=1)
    calib_seqlen: int = Field(2048, ge=16)
    w_bits: Literal[4, 8] = Field(4, description="AWQ weight bits (LMDeploy serves 4).")
    w_group_size: int = Field(128, ge=1)


class DeploySettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("endpoint", "quantized")

    model: str | None = Field(
        None, description="Model directory. Default: finetune's merged model, else pretrain's, else model.path.")
    adapter: str | None = Field(
        None, description="A LoRA adapter (PEFT directory) served on top of `model` by LMDeploy's pytorch engine "
                          "(`--adapters`; GPU). Default: finetune's adapter when finetune ran with merge: false. "
                          "Clients reach it under `served_name`; the base model answers as `<served_name>-base`.")
    backend: Backend = Field(
        "auto", description="auto: turbomind on a GPU, the transformers stand-in on CPU. turbomind/pytorch "
                            "need a GPU; transformers: `transformers serve` (CPU stand-in).")
    model_format: Literal["hf", "awq", "gptq"] | None = Field(
        None, description="Weight format; default: awq for a quantised model, else hf.")
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    tp: int = Field(1, ge=1, description="Tensor-parallel GPUs per api_server.")
    session_len: int | None = Field(None, ge=1, description="Max tokens per session (default: the model's).")
    cache_max_entry_count: float = Field(0.8, gt=0, le=1, description="Fraction of free GPU memory for KV cache.")
    quant_policy: Literal[0, 4, 8] = Field(0, description="KV-cache quantisation: 0 off, 4 int4, 8 int8.")
    max_batch_size: int | None = Field(None, ge=1)
    served_name: str | None = Field(
        None, description="Model name clients send. Default: the chain name. The CPU stand-in serves the "
                          "model under its path.")
    chat_template: str | None = Field(None, description="Chat template name; default: model.chat_template.")
    host: str = Field("127.0.0.1", description="Listen address (LMDeploy's own default, 0.0.0.0, is public).")
    port: int = Field(23333, ge=1, le=65535)
    api_key_env: str | None = Field(
        None, description="Name of an environment variable holding the API key(s), comma-separated. "
                          "The key itself is never written anywhere.")
    startup_timeout_s: float = Field(900, gt=0, description="How long to wait for /health and /v1/models.")
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    quantize: QuantizeSettings = Field(default_factory=QuantizeSettings)
    extra_args: list[str] = Field(default_factory=list, description="More `lmdeploy serve api_server` flags.")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable (letters, digits, '_'), not a key")
        return v

    @field_validator("served_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", v):
            raise ValueError("use letters, digits, '.', '_', ':', '/' and '-'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DeploySettings:
        if self.adapter and self.quantize.enabled:
            raise ValueError("quantize needs a whole model, and `adapter` serves a LoRA adapter on top of one; "
                             "merge the adapter first (finetune merge: true) or drop one of them")
        if self.quantize.enabled and self.model_format == "gptq":
            raise ValueError("quantize.enabled produces AWQ/SmoothQuant weights; drop model_format: gptq")
        return self
