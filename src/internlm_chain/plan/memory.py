"""Per-GPU memory estimates for training and serving.

Formulas (bytes; P = parameters, N = data-parallel GPUs, s = sequence length, b = micro batch,
h = hidden size, L = layers, V = vocabulary):
- Full fine-tuning, AdamW, mixed precision: weights 2P (bf16) + gradients 2P (bf16) + optimizer 12P
  (fp32 master copy 4P + momentum 4P + variance 4P) = 16P before activations (ZeRO paper, Rajbhandari
  et al. 2020). ZeRO-1 shards the 12P optimizer states over N GPUs, ZeRO-2 also the 2P gradients, ZeRO-3
  also the 2P weights; `offload` moves optimizer states (and with ZeRO-3 the weights) to CPU memory.
- LoRA: frozen base weights 2P (bf16) + trainable adapter parameters A counted at 16 bytes each
  (weights, gradients, AdamW states); A = r·(d_in + d_out) per adapted matrix.
- QLoRA: base weights in 4-bit NF4, 0.5 bytes per parameter plus ~0.127 bits per parameter of
  double-quantised constants (Dettmers et al. 2023) ≈ 0.516P; embeddings and lm_head kept in bf16.
- Activations per layer (Korthikanti et al. 2022) with flash attention (no s² term): 34·s·b·h bytes;
  with activation checkpointing only the layer inputs are kept (2·s·b·h per layer) plus one layer
  recomputed in full; the logits add 4·s·b·V bytes (fp32).
- Overhead: CUDA context, allocator fragmentation and communication buffers: 2 GiB + 10%.
- Serving: weights 2P (bf16) or ≈0.53P (AWQ 4-bit, group 128), split over tensor-parallel GPUs; LMDeploy
  gives the KV cache a fraction of what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from internlm_chain.plan.shapes import Shape

GIB = 1024**3
OVERHEAD_FIXED = 2 * GIB
OVERHEAD_FRACTION = 0.10


@dataclass(frozen=True)
class Estimate:
    method: str  # full | lora | qlora | serve
    zero: int  # 0..3 (training) or tensor-parallel size (serving)
    weights: float
    gradients: float
    optimizer: float
    activations: float
    offload: bool = False

    @property
    def total(self) -> float:
        subtotal = self.weights + self.gradients + self.optimizer + self.activations
        return subtotal * (1 + OVERHEAD_FRACTION) + OVERHEAD_FIXED

    def gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 2) for k, v in (("weights", self.weights), ("gradients", self.gradients),
                                                   ("optimizer", self.optimizer), ("activations", self.activations),
                                                   ("total", self.total))}


def lora_params(shape: Shape, r: int = 64) -> float:
    """Adapters on every attention and MLP projection (XTuner's default targets for InternLM2)."""
    h, kv = shape.hidden, shape.hidden * shape.kv_heads // shape.heads
    per_layer = r * ((h + h) + (h + 2 * kv) + (h + h) + 3 * (h + shape.intermediate))
    return per_layer * shape.layers


def activations(shape: Shape, seq_len: int, micro_batch: int, checkpointing: bool = True) -> float:
    sbh = seq_len * micro_batch * shape.hidden
    per_layer_full = 34 * sbh
    layers = (2 * sbh * shape.layers + per_layer_full) if checkpointing else per_layer_full * shape.layers
    logits = 4 * seq_len * micro_batch * shape.vocab
    return layers + logits


def training(shape: Shape, method: str, gpus: int, seq_len: int = 2048, micro_batch: int = 1, zero: int = 0,
             offload: bool = False, lora_r: int = 64) -> Estimate:
    p = shape.params
    act = activations(shape, seq_len, micro_batch)
    n = max(1, gpus)
    if method == "full":
        weights, grads, optim = 2 * p, 2 * p, 12 * p
        if zero >= 1:
            optim /= n
        if zero >= 2:
            grads /= n
        if zero >= 3:
            weights /= n
        if offload:
            optim = 0.0
            if zero >= 3:
                weights = 0.0
        return Estimate("full", zero, weights, grads, optim, act, offload)
    adapters = lora_params(shape, lora_r)
    if method == "lora":
        base = 2 * p
    elif method == "qlora":
        embed = 2 * shape.vocab * shape.hidden  # input embeddings + lm_head stay in bf16
        base = 0.516 * (p - embed) + 2 * embed
    else:
        raise ValueError(f"unknown method {method!r}")
    return Estimate(method, zero, base + 2 * adapters, 2 * adapters, 12 * adapters, act)


def serving(shape: Shape, tp: int, quantized: bool = False) -> Estimate:
    weights = (0.53 if quantized else 2.0) * shape.params / tp
    return Estimate("serve", tp, weights, 0.0, 0.0, 0.0)
