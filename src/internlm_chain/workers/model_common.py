"""Helpers the model_* workers share: dtype and device choice, tokenizer and chat template, greedy
generation. Runs in the xtuner runtime (torch, transformers, peft); imported by its sibling scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "<eoa>")  # chat-turn ends


def torch_dtype(name: str, model_dir: Path):
    """`auto`: the dtype config.json records (float32 when it records none), so nothing changes precision
    unless asked to."""
    import torch

    if name == "auto":
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        name = cfg.get("torch_dtype") or "float32"
    return getattr(torch, name)


def has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in TOKENIZER_FILES)


def load_tokenizer(*folders: Path):
    """The tokenizer of the first folder that has one (an adapter's own carries its training template)."""
    from transformers import AutoTokenizer

    for folder in folders:
        if folder is not None and has_tokenizer(folder):
            return AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    raise SystemExit(f"ichain: no tokenizer in {', '.join(str(f) for f in folders if f)}")


def ensure_chat_template(tokenizer, fallback: str) -> str:
    """Use the tokenizer's own chat template; without one, XTuner's `fallback` template rendered as the
    finetune stage renders it (so a chat matches how the model was trained). Returns which was used."""
    if getattr(tokenizer, "chat_template", None):
        return "model"
    from finetune_verify import xtuner_chat_template  # sibling worker: the finetune stage's mapping

    tokenizer.chat_template = xtuner_chat_template(fallback)
    return f"xtuner:{fallback}"


def prompt_ids(tokenizer, messages: list[dict], device: str):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    return {k: enc[k].to(device) for k in ("input_ids", "attention_mask") if k in enc}


def stop_ids(tokenizer, model) -> list[int]:
    ids: list[int] = []
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids += eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in STOP_TOKENS if t in vocab]
    return sorted(set(ids))


def generate(model, tokenizer, messages: list[dict], max_new: int, temperature: float = 0.0,
             min_new: int = 0, streamer=None) -> list[int]:
    import torch

    ids = prompt_ids(tokenizer, messages, model.device)
    sample = temperature > 0
    kw = {"do_sample": sample, "temperature": temperature} if sample else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new, min_new_tokens=min_new, eos_token_id=stop_ids(tokenizer, model),
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                             else tokenizer.eos_token_id, streamer=streamer, top_p=None, top_k=None, **kw)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def write_report(folder: Path, report: dict) -> None:
    tmp = folder / "ichain-model.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "ichain-model.json")
