"""`inspect`: what a model or adapter folder holds, read from its JSON files and safetensors headers only
(no weights loaded, no runtime): fast enough to run on a 70B checkpoint."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from internlm_chain.models.common import fail, read_json

# safetensors dtype tag → bytes per element
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I8": "int8",
                "U8": "uint8", "I32": "int32", "I64": "int64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on a header


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file: {tensor name: {dtype, shape, data_offsets}, __metadata__}."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise ValueError(f"header of {n} bytes is larger than the format allows")
        return json.loads(fh.read(n))


def weight_tensors(folder: Path) -> dict[str, dict] | None:
    """Every tensor's dtype and shape from the folder's safetensors files (None when there are none)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    tensors: dict[str, dict] = {}
    for f in files:
        try:
            header = safetensors_header(f)
        except (OSError, ValueError) as exc:
            raise fail("PATH", f"{f} is not a readable safetensors file ({exc})") from None
        tensors.update({k: v for k, v in header.items() if k != "__metadata__"})
    return tensors


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def config_parameters(cfg: dict) -> int | None:
    """Exact parameter count of a Llama-family (llama, mistral, qwen2) or InternLM2 layout from config.json
    alone; None for layouts it does not know (then only the weights' count is reported)."""
    kind = cfg.get("model_type")
    if kind not in ("llama", "mistral", "qwen2", "internlm2"):
        return None
    try:
        h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
        inter, heads = int(cfg["intermediate_size"]), int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv = int(cfg.get("num_key_value_heads") or heads)
    hd = int(cfg.get("head_dim") or h // heads)
    q, kvd = heads * hd, kv * hd
    if kind == "internlm2":
        bias = bool(cfg.get("bias", False))  # wqkv and wo share one flag; the MLP has none
        attn = h * (q + 2 * kvd) + q * h + ((q + 2 * kvd) + h if bias else 0)
        mlp = 3 * h * inter
    else:
        qkv_bias = kind == "qwen2" or bool(cfg.get("attention_bias", False))
        attn = h * (q + 2 * kvd) + q * h + (q + 2 * kvd if qkv_bias else 0)
        attn += h if kind != "qwen2" and cfg.get("attention_bias") else 0  # o_proj bias (Llama only)
        mlp = 3 * h * inter + (2 * inter + h if cfg.get("mlp_bias") else 0)
    per_layer = attn + mlp + 2 * h  # two RMSNorm weights
    tied = bool(cfg.get("tie_word_embeddings", False))
    return vocab * h * (1 if tied else 2) + layers * per_layer + h


def _chat_template(folder: Path) -> str | None:
    """Where the folder's chat template lives, if it has one."""
    for name in ("chat_template.jinja", "chat_template.json"):
        if (folder / name).is_file():
            return name
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            if json.loads(tc.read_text(encoding="utf-8")).get("chat_template"):
                return "tokenizer_config.json"
        except (OSError, json.JSONDecodeError):
            return None
    return None


def _disk_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _weights_summary(tensors: dict[str, dict] | None) -> dict | None:
    if tensors is None:
        return None
    dtypes: dict[str, int] = {}
    for t in tensors.values():
        name = _DTYPE_NAMES.get(t["dtype"], t["dtype"])
        dtypes[name] = dtypes.get(name, 0) + _numel(t["shape"])
    return {"tensors": len(tensors), "parameters": sum(_numel(t["shape"]) for t in tensors.values()),
            "dtypes": dict(sorted(dtypes.items(), key=lambda kv: -kv[1]))}


def inspect_model(path: Path) -> dict:
    """Describe a Hugging Face model or PEFT adapter folder (see docs/model.md for the fields)."""
    folder = path.expanduser().resolve()
    if not folder.exists():
        raise fail("PATH", f"not found: {folder}")
    if not folder.is_dir():
        raise fail("PATH", f"{folder} is not a directory", "a Hugging Face model or PEFT adapter folder")
    has_model = (folder / "config.json").is_file()
    has_adapter = (folder / "adapter_config.json").is_file()
    if not has_model and not has_adapter:
        raise fail("PATH", f"{folder} is neither a model (config.json) nor an adapter (adapter_config.json)")
    info: dict = {"path": str(folder), "kind": "model" if has_model else "adapter"}
    weights = _weights_summary(weight_tensors(folder))
    if has_model:
        cfg = read_json(folder / "config.json", "PATH")
        archs = cfg.get("architectures") or []
        from_config = config_parameters(cfg)
        info.update({
            "architecture": archs[0] if archs else None,
            "model_type": cfg.get("model_type"),
            "parameters": from_config if from_config is not None else (weights or {}).get("parameters"),
            "parameters_from": "config" if from_config is not None else ("weights" if weights else None),
            "dtype": cfg.get("torch_dtype") or next(iter((weights or {}).get("dtypes", {})), None),
            "vocab_size": cfg.get("vocab_size"),
            "context_length": cfg.get("max_position_embeddings") or cfg.get("seq_length"),
            "rope_scaling": cfg.get("rope_scaling"),
            "shape": {k: cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "num_key_value_heads", "intermediate_size")},
            "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        })
    if has_adapter:
        acfg = read_json(folder / "adapter_config.json", "PATH")
        base = acfg.get("base_model_name_or_path")
        info["adapter"] = {
            "peft_type": acfg.get("peft_type"),
            "base_model": base,
            "base_model_local": bool(base) and Path(base).expanduser().is_dir(),
            "r": acfg.get("r"),
            "alpha": acfg.get("lora_alpha"),
            "dropout": acfg.get("lora_dropout"),
            "target_modules": sorted(acfg["target_modules"]) if isinstance(acfg.get("target_modules"), list)
            else acfg.get("target_modules"),
        }
        if not has_model:
            info["parameters"] = (weights or {}).get("parameters")
            info["parameters_from"] = "weights" if weights else None
    info["weights"] = weights
    info["chat_template"] = _chat_template(folder)
    info["tokenizer"] = any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model",
                                                            "tokenizer_config.json"))
    info["size_bytes"] = _disk_size(folder)
    return info


def _human(n: float) -> str:
    """6_200_000_000 → '6.2B' (parameters)."""
    for suffix in ("", "K", "M", "B"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}" if suffix else str(int(n))
        n /= 1000
    return f"{n:.3g}T"


def _bytes(n: float) -> str:
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {suffix}" if suffix != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} TiB"


def render_text(info: dict) -> str:
    """The human form: one `key: value` per line."""
    rows: list[tuple[str, str]] = [("path", info["path"]), ("kind", info["kind"])]
    if info["kind"] == "model":
        shape = info["shape"]
        rows += [
            ("architecture", f"{info['architecture']} ({info['model_type']})"),
            ("parameters", f"{info['parameters']:,} ({_human(info['parameters'])}, from {info['parameters_from']})"
             if info["parameters"] is not None else "unknown"),
            ("dtype", str(info["dtype"])),
            ("vocab", str(info["vocab_size"])),
            ("context length", str(info["context_length"]) + (f" (rope scaling {info['rope_scaling']})"
                                                               if info["rope_scaling"] else "")),
            ("shape", ", ".join(f"{k.replace('num_', '').replace('_size', '')}={v}" for k, v in shape.items()
                                if v is not None)),
        ]
    if info.get("adapter"):
        a = info["adapter"]
        base = f"{a['base_model']}" + ("" if a["base_model_local"] else " (not a local folder)")
        targets = ", ".join(a["target_modules"]) if isinstance(a["target_modules"], list) else a["target_modules"]
        rows += [("adapter", f"{a['peft_type']} r={a['r']} alpha={a['alpha']} targets: {targets}"),
                 ("base model", base)]
        if info["kind"] == "adapter" and info["parameters"] is not None:
            rows.append(("adapter parameters", f"{info['parameters']:,}"))
    if info["weights"]:
        w = info["weights"]
        rows.append(("weights", f"{w['tensors']} tensors, {w['parameters']:,} parameters ("
                     + ", ".join(f"{k} {v:,}" for k, v in w["dtypes"].items()) + ")"))
    rows += [("chat template", f"yes ({info['chat_template']})" if info["chat_template"] else "no"),
             ("tokenizer", "yes" if info["tokenizer"] else "no"),
             ("size on disk", f"{info['size_bytes']:,} bytes ({_bytes(info['size_bytes'])})")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n"
