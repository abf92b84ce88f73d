"""Check a converted model: transformers loads it natively (no remote code) and its fp32 logits on the
probe batch match InternEvo's (written by pretrain_to_hf.py) within a tolerance.

Runs in a runtime with a transformers that knows grouped-query Llama (>= 4.31; the `xtuner` runtime,
which is also what fine-tunes the model next). Writes a JSON report; exit 1 when the check fails.
stdlib + torch/numpy/transformers only.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    probe = np.load(args.probe)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, trust_remote_code=False)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(probe["input_ids"])).logits.float().numpy()
    ref = probe["logits"]
    diff = float(np.abs(logits - ref).max()) if logits.shape == ref.shape else float("inf")
    report = {"max_abs_diff": diff, "tolerance": args.tolerance, "ok": diff < args.tolerance,
              "shape": list(logits.shape), "reference_shape": list(ref.shape), "step": int(probe["step"]),
              "architecture": type(model).__name__, "transformers": transformers.__version__}
    try:
        tok = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)
        report["tokenizer"] = type(tok).__name__
        if tok.chat_template:
            report["chat_template_sample"] = tok.apply_chat_template(
                [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # the model is still usable; the report says why the tokenizer is not
        report["ok"] = False
        report["tokenizer_error"] = f"{type(exc).__name__}: {exc}"
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    verdict = "match" if report["ok"] else "MISMATCH"
    print(f"pretrain_verify_hf: {verdict}: max |logits − InternEvo logits| = {diff:.3g} "
          f"(tolerance {args.tolerance:g}); {report['architecture']} via transformers {transformers.__version__}",
          flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
