"""After XTuner: give the output tokenizer the training chat template, load the model, generate a few
tokens, and turn XTuner's scalars into loss.json + loss.png.

    python finetune_verify.py --model DIR [--adapter DIR] --template NAME --work-dir W --out DIR
                              [--prompt TEXT ...] [--max-new-tokens N] [--keep-template]
    python finetune_verify.py --reward-model DIR --reward-token-id N --pairs FILE... --template NAME
                              --work-dir W --out DIR --keep-template

Preference modes were trained on the tokenizer's own chat template (XTuner renders pairs with it), so
`--keep-template` keeps it and only records whether it formats like XTuner's template NAME. A reward model
is not generated from: it is loaded and scores the first pairs of its data (chosen should score higher).

Runs in the xtuner runtime (torch, transformers, xtuner; matplotlib when present).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import struct
import sys
import zlib
from pathlib import Path

SAMPLE = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
]


# ---- chat template -------------------------------------------------------------------------------------
def _jinja_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _piece(fmt: str, field: str) -> str:
    """An XTuner template string like '<|im_start|>user\\n{input}<|im_end|>' as a jinja expression."""
    out = []
    for part in re.split(r"(\{input\}|\{system\}|\{round\})", fmt):
        if part == "{" + field + "}":
            out.append("message['content']")
        elif part == "{round}":
            out.append("(loop.index|string)")
        elif part:
            out.append(_jinja_literal(part))
    return " + ".join(out) if out else "''"


def xtuner_chat_template(name: str) -> str:
    """The HF chat template that formats conversations exactly as XTuner's template did in training.

    XTuner's INSTRUCTION already ends with the assistant header, so a conversation ending in a user turn
    is ready for generation whether or not `add_generation_prompt` is set."""
    from xtuner.utils import PROMPT_TEMPLATE

    t = PROMPT_TEMPLATE[name]
    system = _piece(t.get("SYSTEM", "{system}"), "system")
    user = _piece(t["INSTRUCTION"], "input")
    reply = "message['content']" + "".join(f" + {_jinja_literal(t[k])}" for k in ("SUFFIX", "SEP") if t.get(k))
    return (
        "{{ bos_token }}{% for message in messages %}"
        f"{{% if message['role'] == 'system' %}}{{{{ {system} }}}}"
        f"{{% elif message['role'] == 'user' %}}{{{{ {user} }}}}"
        f"{{% elif message['role'] == 'assistant' %}}{{{{ {reply} }}}}"
        "{% endif %}{% endfor %}"
    )


def template_matches(tokenizer, name: str) -> bool:
    try:
        return (tokenizer.apply_chat_template(SAMPLE, tokenize=False, add_generation_prompt=True)
                == tokenizer.apply_chat_template(SAMPLE, tokenize=False, add_generation_prompt=True,
                                                 chat_template=xtuner_chat_template(name)))
    except Exception:  # a template that cannot render the sample does not match
        return False


def keep_chat_template(tokenizer, model_dir: Path, name: str) -> dict:
    """The tokenizer's template, written with the tokenizer into model_dir (pth_to_hf saves the tokenizer
    already; an adapter folder gets it here)."""
    if not (model_dir / "tokenizer_config.json").is_file():
        tokenizer.save_pretrained(model_dir)
    return {"name": name, "kept_existing": True, "matches_xtuner_template": template_matches(tokenizer, name),
            "chat_template": tokenizer.chat_template}


def set_chat_template(tokenizer, model_dir: Path, name: str) -> dict:
    """Keep the tokenizer's own template when it formats like XTuner's (it may know more, e.g. tools);
    otherwise write XTuner's into tokenizer_config.json. Returns what was done."""
    wanted = xtuner_chat_template(name)
    current = getattr(tokenizer, "chat_template", None)
    kept = False
    if current:
        try:
            kept = (tokenizer.apply_chat_template(SAMPLE, tokenize=False, add_generation_prompt=True)
                    == tokenizer.apply_chat_template(SAMPLE, tokenize=False, add_generation_prompt=True,
                                                     chat_template=wanted))
        except Exception:  # a template that cannot render the sample is not one we keep
            kept = False
    if not kept:
        tokenizer.chat_template = wanted
        cfg_path = model_dir / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
        cfg["chat_template"] = wanted
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"name": name, "kept_existing": kept, "chat_template": tokenizer.chat_template}


# ---- loss curve ----------------------------------------------------------------------------------------
SCALARS = ("reward_acc", "reward_margin", "chosen_rewards", "rejected_rewards", "nll_loss", "log_odds_ratio",
           "acc", "chosen_score_mean", "rejected_score_mean")  # logged by XTuner's DPO / ORPO / RewardModel


def read_losses(work_dir: Path) -> tuple[list[list[float]], list[str]]:
    """[[step, loss], ...] over every run in the work dir (a resumed run overrides the steps it redid),
    and the checkpoints training resumed from (from mmengine's logs)."""
    points, resumed, _ = read_scalars(work_dir)
    return points, resumed


def read_scalars(work_dir: Path) -> tuple[list[list[float]], list[str], dict[str, list[list[float]]]]:
    """read_losses, plus the other SCALARS a preference mode logs, as {name: [[step, value], ...]}."""
    by_step: dict[int, float] = {}
    extra: dict[str, dict[int, float]] = {}
    resumed: list[str] = []
    for run in sorted(p for p in work_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}_\d{6}", p.name)):
        scalars = run / "vis_data" / "scalars.json"
        if scalars.exists():
            for line in scalars.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a run killed mid-write leaves a torn last line
                if "loss" in row and "step" in row:
                    by_step[int(row["step"])] = float(row["loss"])
                    for key in SCALARS:
                        if key in row:
                            extra.setdefault(key, {})[int(row["step"])] = float(row[key])
        for log in glob.glob(str(run / "*.log")):
            with open(log, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    m = re.search(r"Auto resumed from the latest checkpoint (\S+)\.\s*$", line)
                    if m and m.group(1) != "None":
                        resumed.append(m.group(1))
    scalars = {k: [[s, v[s]] for s in sorted(v)] for k, v in extra.items()}
    return [[s, by_step[s]] for s in sorted(by_step)], resumed, scalars


def plot_png(points: list[list[float]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plain_png(points, path)
        return "plain"
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return "matplotlib"


def _plain_png(points: list[list[float]], path: Path, w: int = 480, h: int = 280) -> None:
    """A bare line chart as an RGB PNG (zlib only) for runtimes without matplotlib."""
    px = bytearray(b"\xff" * (w * h * 3))
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, x1, y0, y1 = min(xs), max(xs) or 1, min(ys), max(ys)
        sx = (w - 21) / ((x1 - x0) or 1)
        sy = (h - 21) / ((y1 - y0) or 1)
        coords = [(10 + int((x - x0) * sx), h - 11 - int((y - y0) * sy)) for x, y in zip(xs, ys, strict=True)]
        for (ax_, ay), (bx, by) in zip(coords, coords[1:] or coords, strict=False):
            n = max(abs(bx - ax_), abs(by - ay), 1)
            for i in range(n + 1):
                x, y = ax_ + (bx - ax_) * i // n, ay + (by - ay) * i // n
                px[(y * w + x) * 3:(y * w + x) * 3 + 3] = b"\x1f\x77\xb4"
    raw = b"".join(b"\x00" + bytes(px[r * w * 3:(r + 1) * w * 3]) for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# ---- load and generate ---------------------------------------------------------------------------------
def generate(model_dir: Path, adapter: Path | None, template: str, prompts: list[str], max_new: int,
             keep_template: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    if keep_template:
        template_info = keep_chat_template(tokenizer, adapter or model_dir, template)
    elif adapter is None:
        template_info = set_chat_template(tokenizer, model_dir, template)
    else:  # never edit the base model: the adapter folder gets the tokenizer with the template
        tokenizer.save_pretrained(adapter)
        template_info = set_chat_template(tokenizer, adapter, template)
    dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, trust_remote_code=True)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    if torch.cuda.is_available():
        model = model.cuda()
    model.eval()
    samples = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        ids = {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}  # no token_type_ids for Llama
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new, min_new_tokens=1, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        if not new:
            raise RuntimeError(f"the model generated no tokens for {prompt!r}")
        samples.append({"prompt": prompt, "tokens": new, "text": tokenizer.decode(new, skip_special_tokens=False)})
    n_params = sum(p.numel() for p in model.parameters())
    return {"samples": samples, "parameters": n_params,
            "chat_template": {k: v for k, v in template_info.items() if k != "chat_template"}}


# ---- reward model --------------------------------------------------------------------------------------
PAIRS_SCORED = 16


def _first_pairs(files: list[str], n: int) -> list[dict]:
    pairs: list[dict] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        rows = json.loads(text) if f.endswith(".json") else [json.loads(x) for x in text.splitlines() if x.strip()]
        pairs += rows[:n - len(pairs)]
        if len(pairs) >= n:
            break
    return pairs


def score_pairs(model_dir: Path, token_id: int, template: str, files: list[str]) -> dict:
    """Load the converted reward model as Hugging Face sees it and score chosen vs rejected exactly as
    XTuner trained it: the conversation in the tokenizer's template, the reward token appended, the value
    head read at that last position."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    template_info = keep_chat_template(tokenizer, model_dir, template)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    auto = AutoModel if "AutoModel" in (getattr(config, "auto_map", None) or {}) else \
        AutoModelForSequenceClassification  # InternLM2ForRewardModel (remote code) / XxxForSequenceClassification
    model = auto.from_pretrained(model_dir, torch_dtype=torch.float32, trust_remote_code=True).eval()
    head = getattr(model, "v_head", None) or model.score
    # record the token in the model's config: HF's classes do not know it, and a consumer must append it
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["reward_token_id"] = token_id
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    def score(messages) -> float:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = tokenizer.encode(text, add_special_tokens=False) + [token_id]
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([ids]))[0]
            return float(head(hidden[:, -1]).squeeze())

    rows = []
    for pair in _first_pairs(files, PAIRS_SCORED):
        chosen, rejected = score(pair["prompt"] + pair["chosen"]), score(pair["prompt"] + pair["rejected"])
        rows.append({"chosen": chosen, "rejected": rejected})
    if not rows:
        raise RuntimeError("no pairs to score")
    check = {"pairs": len(rows), "accuracy": sum(r["chosen"] > r["rejected"] for r in rows) / len(rows),
             "chosen_mean": sum(r["chosen"] for r in rows) / len(rows),
             "rejected_mean": sum(r["rejected"] for r in rows) / len(rows),
             "model_class": type(model).__name__}
    return {"samples": [], "reward_check": check, "scores": rows,
            "parameters": sum(p.numel() for p in model.parameters()),
            "chat_template": {k: v for k, v in template_info.items() if k != "chat_template"}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--reward-model")
    ap.add_argument("--reward-token-id", type=int)
    ap.add_argument("--pairs", nargs="+", default=[])
    ap.add_argument("--keep-template", action="store_true")
    ap.add_argument("--adapter")
    ap.add_argument("--template", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt", action="append", default=[])
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args()
    if not (args.model or args.reward_model) or (args.reward_model and args.reward_token_id is None):
        ap.error("give --model, or --reward-model with --reward-token-id")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    points, resumed, scalars = read_scalars(Path(args.work_dir))
    if not points:
        print(f"ichain: no loss values in {args.work_dir}/*/vis_data/scalars.json", file=sys.stderr)
        return 1
    (out / "loss.json").write_text(json.dumps({"points": points, "resumed_from": resumed, "scalars": scalars})
                                   + "\n", encoding="utf-8")
    how = plot_png(points, out / "loss.png")
    print(f"ichain: loss curve with {len(points)} points ({how}) -> {out / 'loss.png'}", flush=True)

    if args.reward_model:
        result = score_pairs(Path(args.reward_model), args.reward_token_id, args.template, args.pairs)
        print(f"ichain: reward model check: {json.dumps(result['reward_check'])}", flush=True)
    else:
        result = generate(Path(args.model), Path(args.adapter) if args.adapter else None, args.template,
                          args.prompt or ["Hello"], args.max_new_tokens, keep_template=args.keep_template)
    for s in result["samples"]:
        print(f"ichain: {s['prompt']!r} -> {s['text']!r}", flush=True)
    tmp = out / "verify.json.tmp"
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "verify.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
