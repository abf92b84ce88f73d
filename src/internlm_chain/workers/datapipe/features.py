"""Document statistics shared by the rule filters and the outlier filter (computed once per text)."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_DIGIT = re.compile(r"\d")
_SYMBOL = re.compile(r"[#…|{}<>\[\]@^~*=_\\$%&+]|\.\.\.")
_WS = re.compile(r"\s")
END_PUNCT = tuple(".!?\"'。！？…”」』）)：:;；")
BULLETS = tuple("•-*·●▪►■◆‣–—")
_P = np.uint64(0x100000001B3)

EN_STOPWORDS = frozenset("the be to of and that have with a in is it for on as was are this by".split())


def top_char_ngram_frac(text: str, n: int = 4) -> float:
    """Share of characters covered by the most frequent character n-gram (Chinese repetition signal)."""
    s = _WS.sub("", text)
    if len(s) < n * 4:
        return 0.0
    c = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    length = len(c) - n + 1
    h = c[:length].copy()
    for k in range(1, n):
        h = h * _P + c[k:k + length]
    _, counts = np.unique(h, return_counts=True)
    return float(counts.max()) * n / len(s)


def top_word_ngram_frac(words: list[str], n: int = 2) -> float:
    if len(words) < n * 4:
        return 0.0
    grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    gram, count = grams.most_common(1)[0]
    total = sum(len(w) for w in words)
    return count * sum(len(w) for w in gram) / max(total, 1)


def doc_stats(doc: dict) -> dict:
    cached = doc.get("_stats")
    if cached is not None:
        return cached
    text = doc["text"]
    lang = doc["meta"].get("lang", "")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    n_lines = max(len(lines), 1)
    counts = Counter(lines)
    dup_lines = sum(c - 1 for c in counts.values())
    dup_chars = sum(len(ln) * (c - 1) for ln, c in counts.items())
    nonspace = len(text) - len(_WS.findall(text)) if not text.isascii() else len(text) - text.count(" ") - text.count("\n")
    nonspace = max(nonspace, 1)
    han = len(_HAN.findall(text)) if not text.isascii() else 0
    cjk = lang in ("zh", "ja", "ko") or han > 0.3 * nonspace
    st = {
        "chars": len(text),
        "lines": len(lines),
        "mean_line_len": len(text) / n_lines,
        "dup_line_frac": dup_lines / n_lines,
        "dup_line_char_frac": dup_chars / max(len(text), 1),
        "end_punct_frac": sum(ln.rstrip().endswith(END_PUNCT) for ln in lines) / n_lines,
        "bullet_frac": sum(ln.lstrip().startswith(BULLETS) for ln in lines) / n_lines,
        "digit_ratio": len(_DIGIT.findall(text)) / nonspace,
        "symbol_ratio": len(_SYMBOL.findall(text)) / nonspace,
        "han_ratio": han / nonspace,
        "cjk": cjk,
    }
    if cjk:
        st["top_ngram_frac"] = top_char_ngram_frac(text)
    else:
        words = text.split()
        nw = max(len(words), 1)
        st["words"] = len(words)
        st["mean_word_len"] = sum(len(w) for w in words) / nw
        st["alpha_word_frac"] = sum(any(ch.isalpha() for ch in w) for w in words) / nw
        st["stopwords"] = sum(1 for w in words if w.lower() in EN_STOPWORDS)
        st["top_ngram_frac"] = top_word_ngram_frac(words)
    doc["_stats"] = st
    return st


# Features of the outlier filter: scale-free, so one robust z-score per language makes sense.
OUTLIER_FEATURES = ("log_chars", "mean_line_len", "dup_line_frac", "end_punct_frac", "digit_ratio",
                    "symbol_ratio", "top_ngram_frac")


def outlier_vector(doc: dict) -> list[float]:
    st = doc_stats(doc)
    return [math.log1p(st["chars"]), math.log1p(st["mean_line_len"]), st["dup_line_frac"],
            st["end_punct_frac"], st["digit_ratio"], st["symbol_ratio"], st["top_ngram_frac"]]
