"""`stages.data`: the offline zh/en corpus pipeline."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from internlm_chain.config.base import StageSettings, StrictModel


class StepEntry(StrictModel):
    """One pipeline step; `params` are checked against the step catalogue before any work starts."""

    name: str = Field(description="extract, normalise, langid, rules, classifier, safety, outlier, "
                                  "dedup_exact, dedup_near or dedup_lines.")
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the step's defaults.")


class RaySettings(StrictModel):
    """Where `executor: ray` runs its tasks (one Ray task per shard and pass, via datatrove)."""

    address: str = Field(
        "local", description="local: a private Ray instance on this machine for this run only (127.0.0.1, no "
        "dashboard, stopped afterwards); auto: the cluster this machine is part of (RAY_ADDRESS, or the one "
        "`ray start` made here); host:port: the GCS address of a running cluster. With a cluster, every node "
        "must see the inputs and the workdir at the same paths as this machine (a shared filesystem) and run "
        "the data runtime's Ray and Python versions.")
    local_cpus: int = Field(0, ge=0, description="address local only: CPUs the private instance may use; "
                            "0 = `workers`, else every core.")
    cpus_per_task: int = Field(1, ge=1, description="CPUs Ray reserves for each task.")
    memory_per_task_gb: float = Field(2.0, gt=0, description="Memory (GiB) Ray reserves for each task.")


class DataSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("clean", "internevo", "xtuner", "sft", "tokenizer", "report")

    inputs: list[str] = Field(default_factory=list, description="Input files or directories (jsonl[.gz|.zst], "
                              "parquet, .txt, .html, .warc[.gz]); relative to the chain file.")
    demo_corpus: int = Field(0, ge=0, description="Also generate the built-in zh+en demo corpus with this many "
                             "documents (duplicates, junk, PII, HTML, conversations) as an input; 0 = off.")
    languages: list[str] = Field(default_factory=lambda: ["zh", "en"], description="Languages to keep.")
    text_key: str = Field("text", description="The JSON/parquet field holding the text.")
    workers: int = Field(0, ge=0, description="Parallel shard workers; 0 = one per CPU core (executor ray: "
                         "tasks running at once; 0 = as many as the cluster's resources allow).")
    executor: Literal["local", "ray", "slurm"] = Field(
        "local", description="local: a process pool; ray/slurm: datatrove's executors, one task per shard.")
    ray: RaySettings = Field(default_factory=RaySettings, description="executor ray only: the Ray cluster.")
    tokenizer: str | None = Field(
        None, description="Tokenizer directory (with tokenizer.json) or 'train' (BPE on the clean corpus). "
                          "Default: model.tokenizer / model.path, else 'train'.")
    tokenizer_vocab_size: int = Field(8000, ge=300, description="Vocabulary size when training a tokenizer.")
    outputs: list[Literal["clean", "internevo", "xtuner"]] = Field(
        default_factory=lambda: ["clean", "internevo", "xtuner"],
        description="Exports besides clean/ (always written): InternEvo .bin, XTuner jsonl.")
    steps: list[StepEntry] | None = Field(
        None, description="Ordered steps; default: extract, normalise, langid, rules, safety, outlier, "
                          "dedup_exact, dedup_near, dedup_lines.")
    internevo_max_bytes: int = Field(1 << 30, ge=1 << 16, lt=1 << 31,
                                     description="Roll InternEvo .bin shards before this size (< 2 GiB).")
