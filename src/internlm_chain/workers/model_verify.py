"""Check a freshly converted model or adapter: load it (an adapter on its base), give an adapter its base's
tokenizer, generate a few tokens, write DIR/ichain-model.json.

    python model_verify.py --model DIR [--base DIR] [--device cpu|cuda] [--max-new-tokens N] [--source PATH]

Runs in the xtuner runtime; exits 1 when the result does not load or generates nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_common import generate, has_tokenizer, load_tokenizer, torch_dtype, write_report  # noqa: E402

PROMPT = [{"role": "user", "content": "Hello"}]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--source", help="What was converted (recorded in the report).")
    ap.add_argument("--template", help="XTuner prompt template it was trained with: becomes its chat template.")
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(a.model)
    adapter_cfg = folder / "adapter_config.json"
    report: dict = {"verb": "convert", "source": a.source, "device": a.device}
    if adapter_cfg.is_file():
        base = Path(a.base or json.loads(adapter_cfg.read_text(encoding="utf-8"))["base_model_name_or_path"])
        report.update(kind="adapter", base=str(base))
        if not has_tokenizer(folder):  # pth_to_hf saves none for an adapter: chat and merge want one here
            load_tokenizer(base).save_pretrained(folder)
        dtype = torch_dtype("auto", base)
        if a.device == "cpu" and dtype == torch.float16:  # many CPU kernels lack fp16
            dtype = torch.float32
        model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=dtype, trust_remote_code=True)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder)
    else:
        report["kind"] = "model"
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype="auto", trust_remote_code=True)
    model = model.to(a.device).eval()
    tokenizer = load_tokenizer(folder)
    if a.template:
        from finetune_verify import set_chat_template  # keeps the tokenizer's own when it formats the same

        report["template"] = {k: v for k, v in set_chat_template(tokenizer, folder, a.template).items()
                              if k != "chat_template"}
    messages = PROMPT if tokenizer.chat_template else None
    if messages is None:  # no template: plain continuation of the prompt text
        tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokens = generate(model, tokenizer, PROMPT, a.max_new_tokens, min_new=1)
    report.update(
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        chat_template=messages is not None,
        sample={"prompt": PROMPT[0]["content"], "tokens": tokens, "text": tokenizer.decode(tokens)},
        ok=bool(tokens),
    )
    if not tokens:
        report["error"] = "the converted model generated no tokens"
    write_report(folder, report)
    print(f"ichain: converted {report['kind']} loads; sample: {report['sample']['text']!r}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
