"""Merge a PEFT adapter into its base model, then prove the saved model computes what base+adapter did.

    python model_merge.py --base DIR --adapter DIR --out DIR [--device cpu|cuda] [--dtype auto|float32|...]
                          [--max-new-tokens N]

Runs in the xtuner runtime. Writes OUT (safetensors, config, generation config, tokenizer with its chat
template) and OUT/ichain-model.json; exits 1 when the reloaded model's logits differ from base+adapter's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_common import generate, load_tokenizer, torch_dtype, write_report  # noqa: E402

PROBE = [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "What is 2 + 3? 书生·浦语"}]
# |Δlogit| allowed between the merged model and base+adapter, relative to the largest logit: the merge
# adds B·A·scale into W once instead of on the fly, so only rounding in the weights' dtype remains
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    a = ap.parse_args()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter, out = Path(a.base), Path(a.adapter), Path(a.out)
    dtype = torch_dtype(a.dtype, base)
    tokenizer = load_tokenizer(adapter, base)  # the adapter's own tokenizer holds its training template
    if tokenizer.chat_template:
        probe_text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    else:
        probe_text = PROBE[-1]["content"]
    probe = tokenizer(probe_text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(a.device)

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=dtype, low_cpu_mem_usage=True,
                                                 trust_remote_code=True).to(a.device)
    model = PeftModel.from_pretrained(model, adapter, is_trainable=False).eval()
    with torch.no_grad():
        reference = model(probe).logits.float().cpu()
    print(f"ichain: merging {adapter} into {base} ({str(dtype).removeprefix('torch.')}, {a.device})", flush=True)
    merged = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    del model, merged

    reloaded = AutoModelForCausalLM.from_pretrained(out, torch_dtype=dtype, trust_remote_code=True).to(a.device).eval()
    with torch.no_grad():
        got = reloaded(probe).logits.float().cpu()
    diff = (got - reference).abs().max().item()
    scale = max(1.0, reference.abs().max().item())
    name = str(dtype).removeprefix("torch.")
    tol = TOLERANCE.get(name, 5e-2) * scale
    tokens = generate(reloaded, tokenizer, PROBE[1:], a.max_new_tokens, min_new=1) if tokenizer.chat_template \
        else []
    report = {
        "verb": "merge", "base": str(base), "adapter": str(adapter), "dtype": name, "device": a.device,
        "max_abs_logit_diff": diff, "tolerance": tol, "probe_tokens": int(probe.shape[1]),
        "parameters": sum(p.numel() for p in reloaded.parameters()),
        "chat_template": bool(tokenizer.chat_template),
        "sample": {"prompt": PROBE[-1]["content"], "tokens": tokens,
                   "text": tokenizer.decode(tokens, skip_special_tokens=False)},
        "ok": diff <= tol,
    }
    if diff > tol:
        report["error"] = f"merged logits differ from base+adapter by {diff:.3g} (> {tol:.3g})"
    write_report(out, report)
    print(f"ichain: max |logit(merged) - logit(base+adapter)| = {diff:.3g} (tolerance {tol:.3g}); "
          f"sample: {report['sample']['text']!r}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
