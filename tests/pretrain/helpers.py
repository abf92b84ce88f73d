"""Chain files and fake InternEvo data for the pretrain tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def fake_internevo_data(root: Path, types=("en", "zh")) -> Path:
    """A valid-looking `<root>/<type>/*.bin(.meta)` tree (tokens JSON lines + int32 index)."""
    for t in types:
        (root / t).mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"tokens": [1, 5, 6, 7, 2]}) + "\n"] * 3
        (root / t / "part-000.bin").write_text("".join(lines), encoding="utf-8")
        # a minimal .npy header is not needed for validation: only its presence is checked here
        (root / t / "part-000.bin.meta").write_bytes(b"\x93NUMPY" + struct.pack("<i", 0))
    return root


def fake_tokenizer(root: Path, size: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    vocab = {f"t{i}": i for i in range(size - 2)}
    added = [{"id": size - 2, "content": "<s>"}, {"id": size - 1, "content": "</s>"}]
    (root / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab},
                                                     "added_tokens": added}), encoding="utf-8")
    return root


def chain_text(tmp: Path, pretrain: str, device: str = "cuda", launcher: str = "", extra: str = "") -> str:
    return (f"name: pt\nworkdir: {tmp}/run\ndevice: {device}\n{launcher}{extra}stages:\n  pretrain:\n"
            + "".join(f"    {line}\n" for line in pretrain.strip("\n").splitlines()))
