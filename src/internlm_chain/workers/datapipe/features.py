"""Document statistics shared by the rule filters and the outlier filter (computed once per text)."""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

import numpy as np

END_PUNCT = tuple(".!?\"'。！？…”」』）)：:;；")
BULLETS = tuple("•-*·●▪►■◆‣–—")
_P = np.uint64(0x100000001B3)

EN_STOPWORDS = frozenset("the be to of and that have with a in is it for on as was are this by".split())


def _case_variants(word: str) -> list[str]:
    out = [""]
    for ch in word:
        out = [o + v for o in out for v in {ch, ch.upper()}]
    return out


# every upper/lower-case spelling of the stop words: `w in` this set == `w.lower() in EN_STOPWORDS` for
# str.split() words (no non-ASCII character lower-cases to one of their letters), without lower-casing
_EN_STOPWORDS_ANY_CASE = frozenset(v for w in EN_STOPWORDS for v in _case_variants(w))

# Character classes for one vectorised pass over a document's code points (BMP; others count as OTHER).
OTHER, SPACE, DIGIT, HAN, SYMBOL, ALPHA = range(6)
_SYMBOL_CHARS = "#…|{}<>[]@^~*=_\\$%&+"
_CLASS_TABLE: np.ndarray | None = None


def class_table() -> np.ndarray:
    """uint8 class of each BMP code point, built once per process (~40 ms)."""
    global _CLASS_TABLE
    if _CLASS_TABLE is None:
        t = np.zeros(65536, dtype=np.uint8)
        for i in range(65536):
            ch = chr(i)
            if ch.isspace():
                t[i] = SPACE
            elif ch.isdecimal():  # what re's \d matches
                t[i] = DIGIT
            elif 0x3400 <= i <= 0x4DBF or 0x4E00 <= i <= 0x9FFF or 0xF900 <= i <= 0xFAFF:
                t[i] = HAN
            elif ch in _SYMBOL_CHARS:
                t[i] = SYMBOL
            elif ch.isalpha():
                t[i] = ALPHA
        _CLASS_TABLE = t
    return _CLASS_TABLE


def char_classes(text: str, codes: np.ndarray | None = None) -> np.ndarray:
    c = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) if codes is None else codes
    return class_table()[np.minimum(c, 0xFFFF)]


def top_char_ngram_frac(text: str, n: int = 4, classes: np.ndarray | None = None,
                        codes: np.ndarray | None = None) -> float:
    """Share of characters covered by the most frequent character n-gram (Chinese repetition signal)."""
    c = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) if codes is None else codes
    if classes is None:
        classes = class_table()[np.minimum(c, 0xFFFF)]
    c = c[classes != SPACE].astype(np.uint64)
    if len(c) < n * 4:
        return 0.0
    length = len(c) - n + 1
    h = c[:length].copy()
    for k in range(1, n):
        h = h * _P + c[k:k + length]  # wraps silently (array arithmetic)
    h.sort()
    # longest run of equal values in the sorted hashes = count of the most frequent n-gram
    edges = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1], [True])))
    return float(np.diff(edges).max()) * n / len(c)


def top_word_ngram_frac(words: list[str], n: int = 2, total: int | None = None) -> float:
    if len(words) < n * 4:
        return 0.0
    # pairwise (C, no slice copies) for the usual bigrams: ~25% less than zip over slices
    grams = Counter(pairwise(words) if n == 2 else zip(*(words[i:] for i in range(n)), strict=False))
    # = most_common(1): the first (in insertion order) of the most frequent, found without a key function
    count = max(grams.values())
    gram = next(g for g, c in grams.items() if c == count)
    if total is None:
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
    dup_lines = dup_chars = 0
    if len(set(lines)) < len(lines):
        counts = Counter(lines)
        dup_lines = sum(c - 1 for c in counts.values())
        dup_chars = sum(len(ln) * (c - 1) for ln, c in counts.items())
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    classes = char_classes(text, codes)
    per_class = np.bincount(classes, minlength=6).tolist()
    nonspace = max(len(text) - per_class[SPACE], 1)
    han = per_class[HAN]
    symbols = per_class[SYMBOL] + text.count("...")
    cjk = lang in ("zh", "ja", "ko") or han > 0.3 * nonspace
    st = {
        "chars": len(text),
        "lines": len(lines),
        "mean_line_len": len(text) / n_lines,
        "dup_line_frac": dup_lines / n_lines,
        "dup_line_char_frac": dup_chars / max(len(text), 1),
        "end_punct_frac": sum([ln.rstrip().endswith(END_PUNCT) for ln in lines]) / n_lines,
        "bullet_frac": sum([ln.lstrip().startswith(BULLETS) for ln in lines]) / n_lines,
        "digit_ratio": per_class[DIGIT] / nonspace,
        "symbol_ratio": symbols / nonspace,
        "han_ratio": han / nonspace,
        "cjk": cjk,
    }
    if cjk:
        st["top_ngram_frac"] = top_char_ngram_frac(text, classes=classes, codes=codes)
    else:
        words = text.split()
        nw = max(len(words), 1)
        st["words"] = len(words)
        st["mean_word_len"] = (len(text) - per_class[SPACE]) / nw  # str.split() and SPACE agree on whitespace
        st["alpha_word_frac"] = _alpha_words(classes) / nw
        st["stopwords"] = sum(map(_EN_STOPWORDS_ANY_CASE.__contains__, words))
        st["top_ngram_frac"] = top_word_ngram_frac(words, total=len(text) - per_class[SPACE])
    doc["_stats"] = st
    return st


# class -> byte for counting words with letters by plain byte operations (order: OTHER SPACE DIGIT HAN SYMBOL ALPHA)
_LETTER_BYTES = np.frombuffer(b"x xaxa", dtype=np.uint8)


def _alpha_words(classes: np.ndarray) -> int:
    """Whitespace-separated words with at least one letter (Han included), as `str.split()` sees them."""
    # each character as " " (space), "a" (letter) or "x"; dropping the x's leaves one run of a's per word
    # with a letter, runs that stay separated by spaces: count the runs
    b = _LETTER_BYTES[classes].tobytes().replace(b"x", b"")
    return b.count(b" a") + b.startswith(b"a")


# Features of the outlier filter: scale-free, so one robust z-score per language makes sense.
OUTLIER_FEATURES = ("log_chars", "mean_line_len", "dup_line_frac", "end_punct_frac", "digit_ratio",
                    "symbol_ratio", "top_ngram_frac")


def outlier_vector(doc: dict) -> list[float]:
    st = doc_stats(doc)
    return [math.log1p(st["chars"]), math.log1p(st["mean_line_len"]), st["dup_line_frac"],
            st["end_punct_frac"], st["digit_ratio"], st["symbol_ratio"], st["top_ngram_frac"]]
