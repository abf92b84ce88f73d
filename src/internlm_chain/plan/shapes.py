"""Model shapes: InternLM2 presets, and a shape estimate for any parameter count."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    params: float  # total parameters
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


# Published InternLM2 configurations (config.json of the released checkpoints).
PRESETS = {
    "internlm2-1.8b": Shape("internlm2-1.8b", 1.89e9, 2048, 24, 16, 8, 8192, 92544),
    "internlm2-7b": Shape("internlm2-7b", 7.74e9, 4096, 32, 32, 8, 14336, 92544),
    "internlm2-20b": Shape("internlm2-20b", 19.86e9, 6144, 48, 48, 8, 16384, 92544),
}


def parse_size(text: str) -> float:
    """'7B', '1.8b', '500M', '7e9', '7000000000' → parameters."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", str(text))
    if not m:
        raise ValueError(f"'{text}' is not a model size (write e.g. 7B, 1.8B or 500M)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    value = float(m.group(1)) * scale
    if value < 1e6:
        raise ValueError(f"'{text}' is too small for a language model (under a million parameters)")
    return value


def shape_for(params: float) -> Shape:
    """The preset within 25% of `params`, else a Llama-like shape solved from P ≈ 12·L·h² + 2·V·h."""
    for preset in PRESETS.values():
        if abs(preset.params - params) / preset.params < 0.25:
            return preset
    vocab = 92544
    # depth grows slowly with size; pick L from h/L ≈ 128 and solve the quadratic for h
    hidden = 1024
    for _ in range(20):
        layers = max(2, round(hidden / 128))
        a, b, c = 12 * layers, 2 * vocab, -params
        hidden = int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
    hidden = max(128, hidden // 128 * 128)
    layers = max(2, round(hidden / 128))
    heads = max(1, hidden // 128)
    return Shape(f"custom-{params / 1e9:.2g}b", params, hidden, layers, heads, max(1, heads // 4),
                 int(hidden * 8 / 3) // 256 * 256 or 256, vocab)
