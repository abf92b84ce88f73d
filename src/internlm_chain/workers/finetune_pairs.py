"""Check preference pairs the way XTuner 0.2.0 will train on them, naming the row that would go wrong.

    python finetune_pairs.py CHECK_CFG.py FILE...

XTuner's `build_preference_dataset` renders `prompt`, `prompt + chosen` and `prompt + rejected` with the
tokenizer's own chat template and learns from the tokens after the prompt. That silently goes wrong when
the template does not render the prompt as a prefix of the whole conversation (the loss mask then cuts
through the prompt or the reply) or when the prompt alone fills `max_length` (nothing left to learn from).
This checks every row for both, then builds XTuner's own dataset from the check config (its loader, its
tokenisation) and compares the row count. Exit 1 with `ichain-row: FILE:LINE: field 'F': message` on the
first bad row, or with XTuner's exception.
"""

from __future__ import annotations

import sys
from pathlib import Path

from finetune_rows import _row_problem, _rows  # sibling module (stdlib only)


def row_problem(tokenizer, row: dict, max_length: int) -> tuple[str, str] | None:
    def ids(messages, generation):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        return tokenizer.encode(text, add_special_tokens=False)

    prompt = ids(row["prompt"], True)
    if len(prompt) >= max_length:
        return "prompt", f"is {len(prompt)} tokens, at least max_length ({max_length}): no reply token is left"
    for key in ("chosen", "rejected"):
        whole = ids(row["prompt"] + row[key], False)
        if whole[:len(prompt)] != prompt:
            return key, ("the tokenizer's chat template does not render the prompt as the start of the "
                         "conversation, so the reply cannot be told apart from the prompt")
        if len(whole) == len(prompt):
            return key, "renders to no tokens after the prompt"
    return None


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    config, files = sys.argv[1], [Path(f) for f in sys.argv[2:]]
    from mmengine.config import Config
    from transformers import AutoTokenizer
    from xtuner.registry import BUILDER

    cfg = Config.fromfile(config)
    tokenizer = AutoTokenizer.from_pretrained(cfg.pretrained_model_name_or_path, trust_remote_code=True)
    if not getattr(tokenizer, "chat_template", None):
        print(f"ichain: the tokenizer of {cfg.pretrained_model_name_or_path} has no chat template, which "
              "XTuner renders preference pairs with", flush=True)
        return 1
    rows = 0
    for f in files:
        for lineno, row in _rows(f, None):
            rows += 1
            if isinstance(row, Exception):
                print(f"ichain-row: {f}:{lineno}: not valid JSON ({row})", flush=True)
                return 1
            bad = _row_problem(row, "preference") or row_problem(tokenizer, row, cfg.max_length)
            if bad:
                print(f"ichain-row: {f}:{lineno}: field '{bad[0]}': {bad[1]}", flush=True)
                return 1
    dataset = BUILDER.build(cfg.train_dataloader.dataset)
    if len(dataset) != rows:
        print(f"ichain: XTuner's preference dataset has {len(dataset)} pairs, the files {rows} rows", flush=True)
        return 1
    first = dataset[0]
    print(f"ichain: {rows} preference pairs tokenised by XTuner; first pair: {len(first['chosen_ids'])} chosen "
          f"and {len(first['rejected_ids'])} rejected tokens", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
