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


class DataSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("clean", "internevo", "xtuner", "sft", "tokenizer", "report")

    inputs: list[str] = Field(default_factory=list, description="Input files or directories (jsonl[.gz|.zst], "
                              "parquet, .txt, .html, .warc[.gz]); relative to the chain file.")
    demo_corpus: int = Field(0, ge=0, description="Also generate the built-in zh+en demo corpus with this many "
                             "documents (duplicates, junk, PII, HTML, conversations) as an input; 0 = off.")
    languages: list[str] = Field(default_factory=lambda: ["zh", "en"], description="Languages to keep.")
    text_key: str = Field("text", description="The JSON/parquet field holding the text.")
    workers: int = Field(0, ge=0, description="Parallel shard workers; 0 = one per CPU core.")
    executor: Literal["local", "ray", "slurm"] = Field(
        "local", description="local: a process pool; ray/slurm: datatrove's executors, one task per shard.")
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
