"""Settings → the InternEvo config: first as a plain dict (what the rules check), then as the .py file.

The dict and the file come from the same values, so what `validate` checks in the ichain process is
exactly what InternEvo's loader reads from the rendered file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "pretrain" / "internevo_config.py.tmpl"
DTYPES = {"bfloat16": "torch.bfloat16", "float16": "torch.float16", "float32": "torch.float32"}


@dataclass(frozen=True)
class Resolved:
    """Everything the config depends on besides the settings, decided once by the stage."""

    shape: dict  # ModelShape.resolved() with vocab_size filled in
    nodes: int
    gpus_per_node: int
    device: str  # cpu | cuda
    train_folder: str
    ckpt_folder: str
    job_name: str

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def flash_and_packed(settings, device: str) -> tuple[bool, bool]:
    # off unless asked for: the shipped internevo runtimes have no flash-attn (a CUDA build on the GPU host)
    flash = bool(settings.use_flash_attn)
    packed = settings.data.packed if settings.data.packed is not None else flash
    return flash, packed


def dtype_of(settings, device: str) -> str:
    if settings.dtype == "auto":
        return "torch.bfloat16" if device == "cuda" else "torch.float32"
    return DTYPES[settings.dtype]


def config_dict(settings, r: Resolved) -> dict:
    s = settings
    flash, packed = flash_and_packed(s, r.device)
    shape = r.shape
    model = {
        "checkpoint": s.activation_checkpoint,
        "num_chunks": s.parallel.pipeline.num_chunks,
        "num_attention_heads": shape["num_attention_heads"],
        "num_kv_attention_heads": shape["num_kv_attention_heads"],
        "embed_split_hidden": True,
        "vocab_size": shape["vocab_size"],
        "embed_grad_scale": 1,
        # vocab-sharded logits need flash-attn's cross entropy (internlm/model/ops/cross_entropy.py)
        "parallel_output": flash,
        "hidden_size": shape["hidden_size"],
        "num_layers": shape["num_layers"],
        "no_bias": True,
        "mlp_ratio": shape["mlp_ratio"],
        "multiple_of": shape["multiple_of"],
        "apply_post_layer_norm": False,
        "dtype": dtype_of(s, r.device),
        "norm_type": "rmsnorm",
        "layer_norm_epsilon": shape["norm_eps"],
        "use_flash_attn": flash,
        "rope_base": shape["rope_base"],
        # HF (non-interleaved) rotary layout: checkpoints convert to the Llama layout without permuting q/k
        "qk_interleaved": False,
    }
    if s.model_type == "INTERNLM2_PUBLIC":  # LLAMA2's constructor has no such argument
        model["max_position_embeddings"] = shape["max_position_embeddings"]
    return {
        "JOB_NAME": r.job_name,
        "model_type": s.model_type,
        "ckpt": {"enable_save_ckpt": True, "save_ckpt_folder": "local:" + r.ckpt_folder,
                 "auto_resume": s.checkpoint.auto_resume, "checkpoint_every": s.checkpoint.every},
        "data": {"seq_len": s.data.seq_len, "micro_num": s.data.micro_num, "micro_bsz": s.data.micro_bsz,
                 "total_steps": s.schedule.total_steps, "min_length": s.data.min_length,
                 "train_folder": r.train_folder, "use_packed_dataset": packed,
                 "pack_sample_into_one": not packed,
                 "num_worker": s.data.num_workers},
        "hybrid_zero_optimizer": {"overlap_sync_grad": r.device == "cuda",
                                  "clip_grad_norm": s.optimizer.clip_grad_norm},
        "grad_scaler": {}, "loss": {}, "beta2_scheduler": {},
        "adam": {"lr": s.optimizer.lr, "adam_beta1": s.optimizer.betas[0], "adam_beta2": s.optimizer.betas[1],
                 "adam_eps": s.optimizer.eps, "weight_decay": s.optimizer.weight_decay},
        "lr_scheduler": {"warmup_ratio": s.schedule.warmup_ratio, "eta_min": s.schedule.min_lr},
        "model": model,
        "parallel": {
            "zero1": {"size": s.parallel.zero1},
            "tensor": {"size": s.parallel.tensor.size, "mode": s.parallel.tensor.mode},
            "pipeline": {"size": s.parallel.pipeline.size,
                         "interleaved_overlap": s.parallel.pipeline.interleaved_overlap},
            "weight": {"size": s.parallel.weight.size},
        },
    }


def render(cfg: dict, r: Resolved) -> str:
    model_items = "\n".join(f"    {k}={_lit(v)}," for k, v in cfg["model"].items())
    par, data, adam = cfg["parallel"], cfg["data"], cfg["adam"]
    unit = "GPU(s)" if r.device == "cuda" else "CPU process(es)"
    layout = f"{r.nodes} node(s) × {r.gpus_per_node} {unit} per node"
    values = {
        "world_size": r.world_size, "layout": layout,
        "job_name": _lit(cfg["JOB_NAME"]), "model_type": _lit(cfg["model_type"]),
        "seq_len": data["seq_len"], "total_steps": data["total_steps"],
        "save_ckpt_folder": _lit(cfg["ckpt"]["save_ckpt_folder"]), "auto_resume": cfg["ckpt"]["auto_resume"],
        "checkpoint_every": cfg["ckpt"]["checkpoint_every"],
        "micro_num": data["micro_num"], "micro_bsz": data["micro_bsz"], "min_length": data["min_length"],
        "train_folder": _lit(data["train_folder"]), "use_packed_dataset": data["use_packed_dataset"],
        "pack_sample_into_one": data["pack_sample_into_one"],
        "num_worker": data["num_worker"],
        "overlap_sync_grad": cfg["hybrid_zero_optimizer"]["overlap_sync_grad"],
        "clip_grad_norm": _lit(cfg["hybrid_zero_optimizer"]["clip_grad_norm"]),
        "lr": _lit(adam["lr"]), "beta1": _lit(adam["adam_beta1"]), "beta2": _lit(adam["adam_beta2"]),
        "eps": _lit(adam["adam_eps"]), "weight_decay": _lit(adam["weight_decay"]),
        "warmup_ratio": _lit(cfg["lr_scheduler"]["warmup_ratio"]), "min_lr": _lit(cfg["lr_scheduler"]["eta_min"]),
        "model_items": model_items,
        "zero1": par["zero1"]["size"], "tensor_size": par["tensor"]["size"], "tensor_mode": _lit(par["tensor"]["mode"]),
        "pipeline_size": par["pipeline"]["size"], "interleaved_overlap": par["pipeline"]["interleaved_overlap"],
        "weight_size": par["weight"]["size"], "weight_overlap": par["weight"]["size"] > 1,
    }
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


def _lit(value) -> str:
    """A Python literal InternEvo's loader reads back as the same value."""
    return repr(value)
