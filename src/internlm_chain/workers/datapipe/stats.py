"""Per-shard counters and fixed-bin histograms (fixed bins make merging shards a plain sum)."""

from __future__ import annotations

import json
import math
import os

LEN_BINS = 32  # log10(chars) in steps of 0.25, 0 .. 8
SCORE_BINS = 20  # 0 .. 1 in steps of 0.05


def new() -> dict:
    return {"docs_in": 0, "malformed": 0, "drops": {}, "kept": 0, "review": 0, "langs": {}, "kept_chars": 0,
            "len_hist": {}, "lang_score_hist": {}, "quality_hist": {}, "pii_masked": {}, "lines_removed": 0}


def drop(st: dict, step: str, reason: str) -> None:
    key = reason.split(":", 1)[0]
    d = st["drops"].setdefault(step, {})
    d[key] = d.get(key, 0) + 1


def _bump(hist: dict, key: str, lang: str) -> None:
    h = hist.setdefault(lang, {})
    h[key] = h.get(key, 0) + 1


def kept(st: dict, doc: dict) -> None:
    meta = doc["meta"]
    lang = meta.get("lang", "?")
    st["kept"] += 1
    st["kept_chars"] += len(doc["text"])
    st["langs"][lang] = st["langs"].get(lang, 0) + 1
    _bump(st["len_hist"], str(min(LEN_BINS - 1, int(math.log10(max(len(doc["text"]), 1)) * 4))), lang)
    if "lang_score" in meta:
        _bump(st["lang_score_hist"], str(min(SCORE_BINS - 1, int(meta["lang_score"] * SCORE_BINS))), lang)
    q = (meta.get("scores") or {}).get("quality")
    if q is not None:
        _bump(st["quality_hist"], str(min(SCORE_BINS - 1, int(q * SCORE_BINS))), lang)
    for k, v in (meta.get("pii_masked") or {}).items():
        st["pii_masked"][k] = st["pii_masked"].get(k, 0) + v


def merge(into: dict, other: dict) -> dict:
    for k, v in other.items():
        if isinstance(v, dict):
            merge(into.setdefault(k, {}), v)
        else:
            into[k] = into.get(k, 0) + v
    return into


def save(st: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(st, fh)
    os.replace(path + ".tmp", path)
