"""Chat with a local model in the terminal: one-shot (--message, repeatable) or interactive (stdin lines;
an empty line or end of input ends the chat). Greedy unless --temperature > 0.

    python model_chat.py --model DIR [--adapter DIR] [--template NAME] [--system TEXT] [--message TEXT ...]
                         [--max-new-tokens N] [--temperature T] [--device cpu|cuda]

Runs in the xtuner runtime. Replies go to stdout (streamed); everything else to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_common import ensure_chat_template, generate, load_tokenizer, torch_dtype  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--template", default="internlm2_chat")
    ap.add_argument("--system")
    ap.add_argument("--message", action="append", default=[])
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, TextStreamer

    model_dir = Path(a.model)
    adapter = Path(a.adapter) if a.adapter else None
    tokenizer = load_tokenizer(*(p for p in (adapter, model_dir) if p))
    template = ensure_chat_template(tokenizer, a.template)
    dtype = torch_dtype("auto", model_dir)
    if a.device == "cpu" and str(dtype) == "torch.float16":  # many CPU kernels lack fp16
        import torch

        dtype = torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, trust_remote_code=True)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model = model.to(a.device).eval()
    interactive = not a.message
    tty = sys.stdin.isatty()
    if interactive:
        print(f"ichain: chatting with {model_dir.name} (template: {template}); an empty line ends", file=sys.stderr,
              flush=True)
    history = [{"role": "system", "content": a.system}] if a.system else []
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    pending = list(a.message)
    while True:
        if pending:
            text = pending.pop(0)
        elif interactive:
            if tty:
                print("you> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            text = line.rstrip("\n")
            if not text.strip():
                return 0
        else:
            return 0
        history.append({"role": "user", "content": text})
        tokens = generate(model, tokenizer, history, a.max_new_tokens, a.temperature, min_new=1, streamer=streamer)
        sys.stdout.flush()
        history.append({"role": "assistant", "content": tokenizer.decode(tokens, skip_special_tokens=True)})


if __name__ == "__main__":
    sys.exit(main())
