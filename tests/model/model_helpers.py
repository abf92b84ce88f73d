"""Fake model and adapter folders for the input checks (no real weights: nothing loads them), and a way to
run `ichain` in-process and see its exit code and output."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from internlm_chain.cli.app import main

HERE = Path(__file__).resolve().parent


def fake_model(root: Path, name: str = "base", config: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config or {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (d / "model.safetensors").write_bytes(b"")
    return d


def fake_adapter(root: Path, base: str, name: str = "adapter") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base, "r": 8,
                                                       "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}))
    (d / "adapter_model.safetensors").write_bytes(b"")
    return d


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file of zeros (header + data), written with the stdlib."""
    size = {"F32": 4, "BF16": 2, "F16": 2}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = size[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def ichain(capsys, *args: str) -> tuple[int, str, str]:
    """Run `ichain ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
