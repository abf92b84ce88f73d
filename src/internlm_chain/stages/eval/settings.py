"""`stages.eval`: OpenCompass evaluation of models and served endpoints."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from internlm_chain.config.base import StageSettings, StrictModel

# Abbreviations become OpenCompass file names and task names (`[model/dataset]`), so keep them plain.
ABBR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_abbr(v: str) -> str:
    if not ABBR.match(v):
        raise ValueError("must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")
    return v


Abbr = Annotated[str, AfterValidator(_check_abbr)]


class EvalModel(StrictModel):
    """A local Hugging Face model (directory), evaluated with OpenCompass's HuggingFace wrappers."""

    path: str = Field(description="Model directory, or a stage reference like ${stages.finetune.outputs.model}.")
    abbr: Abbr | None = Field(None, description="Name in reports. Default: the directory name (made unique).")
    type: Literal["chat", "base"] = Field(
        "chat", description="chat: prompts through the chat template (generative only); base: raw text, "
                            "can also score by perplexity.")
    tokenizer: str | None = Field(None, description="Tokenizer directory; default: `path`.")
    adapter: str | None = Field(None, description="A PEFT adapter directory applied on top of `path`.")
    chat_template: str | None = Field(
        None, description="Force this template (XTuner name, e.g. internlm2_chat) on the tokenizer. Default: the "
                          "tokenizer's own, else the chain's `model.chat_template`.")
    max_seq_len: int | None = Field(None, ge=16, description="Default: read from the model config.")
    num_gpus: int | None = Field(None, ge=0, description="GPUs per task. Default: 0 on CPU, 1 on CUDA.")


class EvalEndpoint(StrictModel):
    """An OpenAI-compatible server (LMDeploy api_server, the CPU stand-in, any /v1 API)."""

    url: str = Field(description="Base URL of the API, e.g. http://127.0.0.1:23333/v1.")
    served_name: str = Field(description="The model name the server expects in requests.")
    abbr: Abbr | None = Field(None, description="Name in reports. Default: the served name.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (never the key).")
    tokenizer_path: str | None = Field(
        None, description="Local tokenizer used to count tokens (offline OpenCompass needs one). "
                          "Default: the chain's model tokenizer.")
    query_per_second: int = Field(4, ge=1)
    max_seq_len: int = Field(4096, ge=16)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL like http://127.0.0.1:23333/v1")
        v = v.rstrip("/")
        # a bare server address (what the deploy stage records) means its OpenAI API under /v1
        return v + "/v1" if re.fullmatch(r"https?://[^/\s]+", v) else v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError("must be an environment variable name, not the key itself")
        return v


class CustomDataset(StrictModel):
    """Your own jsonl/csv file: rows `question, A, B, C, D, answer` (mcq) or `question, answer` (qa)."""

    path: str = Field(description="A .jsonl or .csv file.")
    abbr: Abbr | None = Field(None, description="Name in reports. Default: the file name without extension.")
    kind: Literal["auto", "mcq", "qa"] = Field("auto", description="auto: mcq when the rows have A and B columns.")
    mode: Literal["auto", "gen", "ppl"] = Field(
        "auto", description="auto: perplexity for base models on mcq, generation otherwise. ppl needs base "
                            "models (chat models and endpoints cannot score by perplexity).")

    @field_validator("path")
    @classmethod
    def _ext(cls, v: str) -> str:
        if not v.endswith((".jsonl", ".csv")):
            raise ValueError("must be a .jsonl or .csv file")
        return v


class EvalRunner(StrictModel):
    """Where OpenCompass runs its tasks: here (LocalRunner) or on Slurm (its own SlurmRunner, via srun)."""

    kind: Literal["local", "slurm"] = "local"
    max_num_workers: int = Field(1, ge=1, description="Tasks in parallel (local: per machine; slurm: jobs).")
    partition: str | None = Field(None, description="Slurm partition (slurm only).")
    qos: str | None = Field(None, description="Slurm QOS (slurm only).")
    quotatype: str | None = Field(None, description="Slurm quota type, on clusters that have it (slurm only).")
    retry: int = Field(2, ge=0, description="Re-submissions of a failed Slurm task.")
    extra_command: list[str] = Field(default_factory=list, description="Extra srun options, e.g. ['-c 16'].")
    num_split: int = Field(1, ge=1, description="Split each dataset into this many inference tasks.")

    @model_validator(mode="after")
    def _slurm_only(self) -> EvalRunner:
        if self.kind == "local":
            used = [f for f in ("partition", "qos", "quotatype") if getattr(self, f) is not None]
            if used or self.extra_command:
                names = ", ".join(used + (["extra_command"] if self.extra_command else []))
                raise ValueError(f"{names} only apply to kind: slurm")
        return self


class EvalSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("report",)

    models: list[EvalModel] | None = Field(
        None, description="Models to evaluate side by side. Default: the chain's base model and the finetune "
                          "stage's model when that stage is enabled.")
    endpoints: list[EvalEndpoint] = Field(default_factory=list, description="OpenAI-compatible servers to evaluate.")
    datasets: list[str] = Field(
        default_factory=list, description="OpenCompass built-in dataset configs, e.g. gsm8k_gen, ceval_gen "
                                          "(or DIR/NAME, e.g. gsm8k/gsm8k_gen_1d7fe4).")
    data_dir: str | None = Field(
        None, description="Root of the local OpenCompass data (COMPASS_DATA_CACHE): files under <data_dir>/data/"
                          "<name>/. Required for built-in datasets; nothing is ever downloaded.")
    custom: list[CustomDataset] = Field(default_factory=list, description="Your own jsonl/csv datasets.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows of every dataset.")
    max_out_len: int | None = Field(
        None, ge=1, description="Max new tokens per generated answer. When set it overrides the built-in "
                                "configs' own lengths too; default: 256 for models, built-ins keep theirs.")
    batch_size: int = Field(8, ge=1)
    runner: EvalRunner = Field(default_factory=EvalRunner)
    work_dir: str | None = Field(None, description="OpenCompass work dir. Default: <stage dir>/opencompass.")

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$", name):
                raise ValueError(f"'{name}' is not a dataset config name (like gsm8k_gen or gsm8k/gsm8k_gen)")
        return v
