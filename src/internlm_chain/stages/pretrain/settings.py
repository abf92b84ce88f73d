"""`stages.pretrain`: InternEvo pre-training (model shape, parallelism, data, optimiser, checkpoints)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from internlm_chain.config.base import StageSettings, StrictModel

# The InternLM2 shapes InternEvo ships configs for (configs/_base_/models/internlm2_*.py) and a tiny
# one for CPU smoke runs. vocab_size None = the tokenizer's size.
PRESETS: dict[str, dict] = {
    "internlm2-1.8b": dict(hidden_size=2048, num_layers=24, num_attention_heads=16, num_kv_attention_heads=8,
                           vocab_size=92544, mlp_ratio=4.0, rope_base=1000000, multiple_of=128),
    "internlm2-7b": dict(hidden_size=4096, num_layers=32, num_attention_heads=32, num_kv_attention_heads=8,
                         vocab_size=92544, mlp_ratio=3.5, rope_base=1000000, multiple_of=256),
    "internlm2-20b": dict(hidden_size=6144, num_layers=48, num_attention_heads=48, num_kv_attention_heads=8,
                          vocab_size=92544, mlp_ratio=8 / 3, rope_base=1000000, multiple_of=256),
    "tiny": dict(hidden_size=64, num_layers=2, num_attention_heads=4, num_kv_attention_heads=2,
                 vocab_size=None, mlp_ratio=2.0, rope_base=10000, multiple_of=32),
}


class ModelShape(StrictModel):
    preset: Literal["internlm2-1.8b", "internlm2-7b", "internlm2-20b", "tiny"] | None = Field(
        "tiny", description="A known shape; fields set next to it override the preset's values. With "
                            "`preset: null`, hidden_size, num_layers, num_attention_heads and mlp_ratio are required.")
    hidden_size: int | None = Field(None, ge=8)
    num_layers: int | None = Field(None, ge=1)
    num_attention_heads: int | None = Field(None, ge=1)
    num_kv_attention_heads: int | None = Field(None, ge=1, description="Grouped-query attention KV heads.")
    vocab_size: int | None = Field(None, ge=2, description="Default: the preset's, else the tokenizer's size.")
    mlp_ratio: float | None = Field(None, gt=0, description="FFN width = hidden_size × mlp_ratio, rounded up "
                                                            "to a multiple of `multiple_of`.")
    multiple_of: int | None = Field(None, ge=1)
    rope_base: int | None = Field(None, ge=1)
    max_position_embeddings: int = Field(4096, ge=16)
    norm_eps: float = Field(1e-5, gt=0)

    def resolved(self) -> dict:
        """The shape with preset values filled in (vocab_size may stay None: tokenizer's size)."""
        base = dict(PRESETS[self.preset]) if self.preset else {}
        for key in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_attention_heads", "vocab_size",
                    "mlp_ratio", "multiple_of", "rope_base"):
            value = getattr(self, key)
            if value is not None:
                base[key] = value
        base.setdefault("multiple_of", 256)
        base.setdefault("rope_base", 10000)
        base.setdefault("vocab_size", None)
        if "num_attention_heads" in base:
            base.setdefault("num_kv_attention_heads", base["num_attention_heads"])
        base["max_position_embeddings"] = self.max_position_embeddings
        base["norm_eps"] = self.norm_eps
        return base


class TensorParallel(StrictModel):
    size: int = Field(1, ge=1)
    mode: Literal["mtp", "msp", "fsp", "isp"] = Field(
        "mtp", description="mtp: Megatron TP; msp/fsp: TP with sequence parallel; isp: InternEvo sequence "
                           "parallel (with weight parallel).")


class PipelineParallel(StrictModel):
    size: int = Field(1, ge=1)
    num_chunks: int = Field(1, ge=1, description="Model chunks per pipeline stage (> 1: interleaved 1F1B; "
                                                 "needs interleaved_overlap: true).")
    interleaved_overlap: bool = False


class WeightParallel(StrictModel):
    size: int = Field(1, ge=1, description="ISP weight parallel size (tensor.mode isp only).")


class ParallelSettings(StrictModel):
    zero1: int = Field(-1, ge=-1, description="ZeRO-1 group size; -1 = the whole data-parallel group.")
    tensor: TensorParallel = Field(default_factory=TensorParallel)
    pipeline: PipelineParallel = Field(default_factory=PipelineParallel)
    weight: WeightParallel = Field(default_factory=WeightParallel)


class DataSpec(StrictModel):
    path: str | None = Field(None, description="InternEvo tokenized data (`<root>/<type>/*.bin`). "
                                               "Default: the data stage's `internevo` output.")
    seq_len: int = Field(2048, ge=8)
    micro_bsz: int = Field(1, ge=1)
    micro_num: int = Field(4, ge=1, description="Micro-batches per optimiser step (gradient accumulation).")
    packed: bool | None = Field(None, description="use_packed_dataset; must equal use_flash_attn. "
                                                  "Default: follows use_flash_attn.")
    min_length: int = Field(0, ge=0, description="Drop samples shorter than this many tokens.")
    num_workers: int = Field(2, ge=0, description="Data-loader worker processes per rank.")


class OptimizerSettings(StrictModel):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2,
                               description="AdamW (beta1, beta2).")
    eps: float = Field(1e-8, gt=0)
    clip_grad_norm: float = Field(1.0, ge=0)


class ScheduleSettings(StrictModel):
    total_steps: int = Field(1000, ge=1)
    warmup_ratio: float = Field(0.01, ge=0, lt=1)
    min_lr: float = Field(1e-5, ge=0, description="Cosine decay floor (eta_min).")


class CheckpointSettings(StrictModel):
    every: int = Field(50, ge=1, description="Save every N steps (and at the last step).")
    auto_resume: bool = Field(True, description="Resume from the latest checkpoint in the folder.")
    folder: str | None = Field(None, description="Default: <stage output>/checkpoints.")


class PretrainSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("checkpoint", "model")

    model: ModelShape = Field(default_factory=ModelShape)
    model_type: Literal["INTERNLM2_PUBLIC", "LLAMA2"] = "INTERNLM2_PUBLIC"
    nodes: int | None = Field(None, ge=1, description="Default: the launcher's nnodes.")
    gpus_per_node: int | None = Field(None, ge=1, description="Default: the launcher's nproc_per_node.")
    parallel: ParallelSettings = Field(default_factory=ParallelSettings)
    data: DataSpec = Field(default_factory=DataSpec)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field(
        "auto", description="auto: bfloat16 on GPUs, float32 in CPU smoke mode.")
    use_flash_attn: bool | None = Field(None, description="Flash attention (and packed data, vocab-parallel "
                                                          "loss); needs flash-attn built into the internevo "
                                                          "runtime on the GPU host. Default: false.")
    activation_checkpoint: float = Field(0.0, ge=0, le=1, description="Share of layers recomputed in backward.")
    tokenizer: str | None = Field(None, description="Tokenizer directory (tokenizer.json). Default: the data "
                                                    "stage's tokenizer, else model.tokenizer.")
    convert_to_hf: bool = Field(True, description="Convert the last checkpoint to an HF Llama-layout model.")
    seed: int = 1024
