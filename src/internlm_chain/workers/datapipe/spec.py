"""The step catalogue: names, kinds and default parameters. Stdlib only.

Both the worker (to run) and the stage glue (to validate chain files before any work) read this, so
a step or parameter exists in exactly one place.
"""

from __future__ import annotations

import copy

# kind "doc": decided document by document while a shard streams through.
# kind "global": needs corpus-wide state (collected per shard, decided once, applied in a later pass).
STEPS: dict[str, dict] = {
    "extract": {
        "kind": "doc",
        "help": "Main text from HTML/WARC records (other records pass through).",
        "params": {"engine": "trafilatura", "min_chars": 20, "include_tables": True},
        "choices": {"engine": ["trafilatura", "resiliparse"]},
    },
    "normalise": {
        "kind": "doc",
        "help": "Encoding repair, Unicode normalisation that keeps Chinese punctuation, whitespace.",
        "params": {"fix_encoding": True, "fullwidth_alnum": True, "strip_control": True,
                   "collapse_whitespace": True, "traditional_to_simplified": False},
    },
    "langid": {
        "kind": "doc",
        "help": "Offline language id (fastText lid.176 lite) with a script-share rule for mixed zh/en.",
        "params": {"threshold": 0.5, "min_han_share": 0.3, "max_chars": 1000, "model": None},
    },
    "rules": {
        "kind": "doc",
        "help": "Heuristic quality rules; character-based for Chinese, word-based for other languages.",
        "params": {
            "min_chars": 50, "max_chars": 1_000_000,
            "max_symbol_ratio": 0.1, "max_digit_ratio": 0.3,
            "max_dup_line_frac": 0.3, "max_dup_line_char_frac": 0.2,
            "max_top_ngram_frac": 0.25, "min_end_punct_frac": 0.1, "max_bullet_line_frac": 0.9,
            "min_cjk_ratio": 0.3,
            "min_words": 30, "max_words": 200_000, "min_mean_word_len": 2.5, "max_mean_word_len": 10.0,
            "min_alpha_word_frac": 0.7, "min_stopwords": 2,
            "bad_substrings": ["lorem ipsum"],
        },
    },
    "classifier": {
        "kind": "doc",
        "help": "A fastText-format quality classifier given by path; keeps documents scoring >= threshold.",
        "params": {"model": None, "label": "__label__hq", "threshold": 0.5, "max_chars": 4000},
    },
    "safety": {
        "kind": "doc",
        "help": "Word/domain blocklists (Aho-Corasick), optional classifier, PII masking, review file.",
        "params": {
            "words": None, "words_file": None, "domains": None, "domains_file": None,
            "drop_hits": 3, "review_hits": 1,
            "classifier": None, "classifier_label": "__label__unsafe",
            "classifier_drop": 0.9, "classifier_review": 0.5,
            "pii": ["email", "phone", "cn_id"],
        },
        "choices": {"pii": ["email", "phone", "cn_id"]},
    },
    "outlier": {
        "kind": "global",
        "help": "Unsupervised outlier filter: robust z-scores (median/MAD per language) of document features.",
        "params": {"max_z": 8.0, "review_z": 5.0, "min_docs": 50, "sample": 1_000_000},
    },
    "dedup_exact": {
        "kind": "global",
        "help": "Exact duplicates after normalisation (case, whitespace and punctuation folded).",
        "params": {},
    },
    "dedup_near": {
        "kind": "global",
        "help": "Near duplicates: MinHash-LSH, character n-grams for CJK, word n-grams otherwise.",
        "params": {"threshold": 0.6, "num_perm": 128, "bands": 32, "char_ngram": 5, "word_ngram": 3,
                   "partitions": 0},
    },
    "dedup_lines": {
        "kind": "global",
        "help": "Lines/paragraphs repeated across many documents (boilerplate) are removed.",
        "params": {"min_docs": 5, "min_line_chars": 8, "min_chars_after": 30},
    },
}

DEFAULT_STEPS = ["extract", "normalise", "langid", "rules", "safety", "outlier",
                 "dedup_exact", "dedup_near", "dedup_lines"]

# Global steps that change document text; a later global step must see the changed text.
TEXT_CHANGING = {"dedup_lines"}

OUTPUTS = ["clean", "internevo", "xtuner"]


def default_params(name: str) -> dict:
    return copy.deepcopy(STEPS[name]["params"])


def check_step(name: str, params: dict) -> list[tuple[str, str]]:
    """Problems with one step entry as (field, message); empty when fine."""
    if name not in STEPS:
        return [("name", f"unknown step '{name}'; steps are: " + ", ".join(STEPS))]
    problems = []
    known = STEPS[name]["params"]
    for key, value in params.items():
        if key not in known:
            problems.append((f"params.{key}", f"step '{name}' has no parameter '{key}'; it has: "
                             + (", ".join(known) or "none")))
            continue
        default = known[key]
        choices = STEPS[name].get("choices", {}).get(key)
        if choices:
            values = value if isinstance(value, list) else [value]
            bad = [v for v in values if v not in choices]
            if bad:
                problems.append((f"params.{key}", f"{bad[0]!r} is not one of: " + ", ".join(choices)))
                continue
        if default is not None and value is not None and not _same_type(default, value):
            problems.append((f"params.{key}", f"expected {type(default).__name__}, got {value!r}"))
    return problems


def _same_type(default, value) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def resolve_steps(steps: list[dict] | None) -> list[dict]:
    """Fill defaults: [{name, params}] with every parameter present."""
    if steps is None:
        steps = [{"name": n} for n in DEFAULT_STEPS]
    return [{"name": s["name"], "params": {**default_params(s["name"]), **(s.get("params") or {})}}
            for s in steps]
