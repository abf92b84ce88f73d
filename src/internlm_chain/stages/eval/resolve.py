"""From `stages.eval` settings (+ the chain, + earlier stages' artifacts) to what OpenCompass will evaluate.

Everything here is pure: it reads the settings and, for custom datasets, the first row of the file
(to know its columns), so `plan` stays golden-testable and `validate` can say what is wrong first.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.errors import Problem
from internlm_chain.stages.base import StageContext

# Where OpenCompass's built-in configs expect their files, relative to COMPASS_DATA_CACHE (its
# DATASETS_MAPPING 'local' entries, plus the files the loaders open). Checked before any job starts so a
# missing copy is a clear error, never a download attempt; other built-ins are checked by the preflight
# job inside the runtime, which reads OpenCompass's own mapping.
KNOWN_BUILTIN_FILES: dict[str, list[str]] = {
    "gsm8k": ["data/gsm8k/train.jsonl", "data/gsm8k/test.jsonl"],
    "ceval": ["data/ceval/formal_ceval/dev", "data/ceval/formal_ceval/val", "data/ceval/formal_ceval/test"],
    "mmlu": ["data/mmlu/dev", "data/mmlu/test"],
    "cmmlu": ["data/cmmlu/dev", "data/cmmlu/test"],
    "math": ["data/math/math.json"],
    "humaneval": ["data/humaneval/human-eval-v2-20210705.jsonl"],
}


@dataclass
class ResolvedModel:
    abbr: str
    kind: str  # hf_chat | hf_base | api
    path: str  # model dir, or the served model name for an API
    tokenizer: str | None = None
    adapter: str | None = None
    chat_template: str | None = None  # XTuner name forced onto the tokenizer
    max_seq_len: int | None = None
    num_gpus: int = 0
    url: str | None = None
    api_key_env: str | None = None
    query_per_second: int = 1
    fingerprint: str = ""
    source: str = ""  # where it came from: settings, chain model, finetune.model, ...

    @property
    def is_base(self) -> bool:
        return self.kind == "hf_base"


@dataclass
class ResolvedDataset:
    abbr: str
    kind: str  # builtin | custom
    mode: str  # gen | ppl
    module: str | None = None  # builtin: opencompass.configs.datasets.<dir>.<name>
    family: str | None = None
    path: str | None = None  # custom: the file
    data_type: str | None = None  # custom: mcq | qa
    input_columns: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    source: str = ""  # settings path, for errors


@dataclass
class EvalPlan:
    models: list[ResolvedModel]
    datasets: list[ResolvedDataset]
    combos: list[tuple[str, str]]  # (model abbr, dataset abbr) pairs that will be evaluated
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (model, dataset, why)


def builtin_module(name: str) -> tuple[str, str, str]:
    """`gsm8k_gen` → (module, family dir, mode). `DIR/NAME` names the directory explicitly."""
    if "/" in name:
        family, cfg = name.split("/", 1)
    else:
        cfg = name
        # the directory is the part before the mode, or before a shot count (gsm8k_0shot_gen_a58960 → gsm8k)
        m = re.match(r"^(.+?)_(?:\d+shot|gen|ppl|clp|ll|llmjudge)(_|$)", name)
        family = m.group(1) if m else name
    mode = "ppl" if re.search(r"(^|_)ppl(_|$)", cfg) else "gen"
    return f"opencompass.configs.datasets.{family}.{cfg}", family, mode


def read_first_row(path: Path) -> dict:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("the first row is not a JSON object")
                    return row
        raise ValueError("the file is empty")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        row = next(reader, None)
        if header is None or row is None:
            raise ValueError("the file needs a header row and at least one data row")
        return dict(zip(header, row, strict=False))


def tokenizer_has_template(directory: str) -> bool:
    """Whether the tokenizer carries its own chat template; an unreadable one counts as 'yes' (the
    model may not exist yet during a dry-run, and OpenCompass will use whatever it has)."""
    d = Path(directory)
    if (d / "chat_template.jinja").exists() or (d / "chat_template.json").exists():
        return True
    try:
        cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return bool(cfg.get("chat_template"))


def _options(row: dict) -> list[str]:
    out = []
    for i in range(26):
        letter = chr(ord("A") + i)
        if letter not in row:
            break
        out.append(letter)
    return out


def _unique(abbr: str, taken: set[str]) -> str:
    candidate, n = abbr, 2
    while candidate in taken:
        candidate, n = f"{abbr}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _safe_abbr(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"
    return text if text[0].isalnum() else "m" + text


def _abs(ctx: StageContext, p: str) -> str:
    path = Path(os.path.expanduser(p))
    return str(path if path.is_absolute() else (ctx.chain.base_dir / path).resolve())


def resolve(ctx: StageContext, problems: list[Problem] | None = None) -> EvalPlan:
    """The models, datasets and model×dataset pairs of this eval; problems found are appended."""
    problems = [] if problems is None else problems
    s = ctx.settings
    chain = ctx.chain.config
    fingerprints = {a.path: a.fingerprint for a in ctx.inputs.values()}
    sources = {a.path: key for key, a in ctx.inputs.items()}
    gpus = 0 if ctx.device == "cpu" else 1
    taken: set[str] = set()
    models: list[ResolvedModel] = []

    if s.models is None:
        entries = []  # (path, source, abbr, adapter)
        if chain.model.path:
            entries.append((chain.model.path, "chain model.path", "base", None))
        ft, ft_adapter = ctx.inputs.get("finetune.model"), ctx.inputs.get("finetune.adapter")
        if ft is not None:
            entries.append((ft.path, "finetune.model", "finetuned", None))
        elif ft_adapter is not None and (ft_adapter.base_model or chain.model.path):
            # LoRA without a merged model: the adapter on the base it was trained on (finetune's own
            # `model` or pretrain's output may differ from the chain's model.path)
            entries.append((ft_adapter.base_model or chain.model.path, "finetune.adapter", "finetuned", ft_adapter))
        for path, source, default_abbr, adapter in entries:
            full = _abs(ctx, path)
            fp_path = adapter.path if adapter is not None else path
            models.append(ResolvedModel(
                abbr=_unique(default_abbr, taken), kind="hf_chat", path=full,
                tokenizer=_abs(ctx, chain.model.tokenizer) if chain.model.tokenizer and source != "finetune.model"
                else None, adapter=adapter.path if adapter is not None else None, num_gpus=gpus,
                fingerprint=fingerprints.get(fp_path, ""), source=source))
    else:
        for i, m in enumerate(s.models):
            full = _abs(ctx, m.path)
            abbr = m.abbr or _safe_abbr(Path(full).name)
            if m.abbr and m.abbr in taken:
                problems.append(ctx.problem(f"models.{i}.abbr", f"'{m.abbr}' is used twice", "abbrs must be unique"))
            models.append(ResolvedModel(
                abbr=_unique(abbr, taken), kind="hf_chat" if m.type == "chat" else "hf_base", path=full,
                tokenizer=_abs(ctx, m.tokenizer) if m.tokenizer else None,
                adapter=_abs(ctx, m.adapter) if m.adapter else None, chat_template=m.chat_template,
                max_seq_len=m.max_seq_len, num_gpus=gpus if m.num_gpus is None else m.num_gpus,
                fingerprint=fingerprints.get(m.path, ""), source=sources.get(m.path, f"models.{i}")))

    for m in models:
        if m.kind == "hf_chat" and m.chat_template is None and not tokenizer_has_template(m.tokenizer or m.path):
            m.chat_template = chain.model.chat_template  # the chain's template, as fine-tuning used it

    default_tok = chain.model.tokenizer or chain.model.path
    for i, e in enumerate(s.endpoints):
        tok = e.tokenizer_path or default_tok
        if e.abbr and e.abbr in taken:
            problems.append(ctx.problem(f"endpoints.{i}.abbr", f"'{e.abbr}' is used twice", "abbrs must be unique"))
        models.append(ResolvedModel(
            abbr=_unique(e.abbr or _safe_abbr(e.served_name), taken), kind="api", path=e.served_name,
            tokenizer=_abs(ctx, tok) if tok else None, url=e.url, api_key_env=e.api_key_env,
            max_seq_len=e.max_seq_len, query_per_second=e.query_per_second, source=f"endpoints.{i}"))

    datasets: list[ResolvedDataset] = []
    dtaken: set[str] = set()
    modules: dict[str, str] = {}
    for i, name in enumerate(s.datasets):
        module, family, mode = builtin_module(name)
        if module in modules:
            problems.append(ctx.problem(f"datasets.{i}", f"'{name}' is listed twice (as '{modules[module]}')",
                                        "list each config once"))
            continue
        modules[module] = name
        datasets.append(ResolvedDataset(abbr=_unique(name.split("/")[-1], dtaken), kind="builtin", mode=mode,
                                        module=module, family=family, source=f"datasets.{i}"))
    for i, c in enumerate(s.custom):
        path = Path(_abs(ctx, c.path))
        where = f"custom.{i}.path"
        try:
            row = read_first_row(path)
        except FileNotFoundError:
            problems.append(ctx.problem(where, f"dataset file not found: {path}"))
            continue
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            problems.append(ctx.problem(where, f"cannot read {path}: {exc}"))
            continue
        options = _options(row)
        kind = c.kind if c.kind != "auto" else ("mcq" if len(options) > 1 else "qa")
        missing = [col for col in ("question", "answer") if col not in row]
        if kind == "mcq" and len(options) < 2:
            missing.append("A, B (the options)")
        if missing:
            problems.append(ctx.problem(where, f"{path.name}: the rows lack {', '.join(missing)}",
                                        "mcq rows are question, A, B, [C, D…], answer; qa rows are question, answer"))
            continue
        inputs = [k for k in row if k != "answer"]
        abbr = c.abbr or _safe_abbr(path.name.split(".")[0])
        if kind == "qa" and c.mode == "ppl":
            problems.append(ctx.problem(f"custom.{i}.mode", "perplexity mode needs multiple-choice rows",
                                        "use mode: gen for question/answer data"))
            continue
        modes = ["gen", "ppl"] if (kind == "mcq" and c.mode == "auto") else [c.mode if c.mode != "auto" else "gen"]
        for mode in modes:
            suffix = "_ppl" if (mode == "ppl" and len(modes) > 1) else ""
            datasets.append(ResolvedDataset(abbr=_unique(abbr + suffix, dtaken), kind="custom", mode=mode,
                                            path=str(path), data_type=kind, input_columns=inputs,
                                            options=options if kind == "mcq" else [], source=f"custom.{i}"))

    combos, skipped = _combinations(models, datasets)
    used = {d for _, d in combos}
    for d in datasets:
        if d.abbr not in used and models:
            why = "perplexity needs a base model (type: base)" if d.mode == "ppl" else "no model to evaluate"
            if not (d.kind == "custom" and any(o.path == d.path and o.abbr in used for o in datasets)):
                problems.append(ctx.problem(d.source, f"no model can score '{d.abbr}': {why}",
                                            "add a model with type: base, or use a generative (gen) config"))
    datasets = [d for d in datasets if d.abbr in used]
    return EvalPlan(models=models, datasets=datasets, combos=combos, skipped=skipped)


def _combinations(models: list[ResolvedModel], datasets: list[ResolvedDataset]):
    """Which model scores which dataset: perplexity needs a base model (logits of the full text)."""
    combos, skipped = [], []
    auto_custom = {d.path for d in datasets if d.kind == "custom"
                   and sum(1 for o in datasets if o.path == d.path) > 1}
    for m in models:
        for d in datasets:
            if d.mode == "ppl" and not m.is_base:
                if d.path not in auto_custom:  # an explicit ppl request, or a ppl built-in
                    skipped.append((m.abbr, d.abbr, "perplexity needs a base model"))
                continue
            if d.kind == "custom" and d.path in auto_custom and d.mode == "gen" and m.is_base:
                continue  # auto mode: base models score this mcq file by perplexity instead
            combos.append((m.abbr, d.abbr))
    return combos, skipped
