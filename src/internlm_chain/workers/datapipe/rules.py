"""Heuristic quality rules. Chinese (and other CJK) text gets character rules, never English word rules.

A failing rule returns "<rule>: <detail>", so the report can group drops by rule.
"""

from __future__ import annotations

from .features import doc_stats


class Rules:
    def __init__(self, **p):
        self.p = p
        self.bad = [s.lower() for s in (p.get("bad_substrings") or [])]

    def __call__(self, doc: dict):
        p = self.p
        st = doc_stats(doc)
        lang = doc["meta"].get("lang", "")
        n = st["chars"]
        if n < p["min_chars"]:
            return f"min_chars: {n} < {p['min_chars']}"
        if n > p["max_chars"]:
            return f"max_chars: {n} > {p['max_chars']}"
        if st["symbol_ratio"] > p["max_symbol_ratio"]:
            return f"max_symbol_ratio: {st['symbol_ratio']:.2f}"
        if st["digit_ratio"] > p["max_digit_ratio"]:
            return f"max_digit_ratio: {st['digit_ratio']:.2f}"
        if st["dup_line_frac"] > p["max_dup_line_frac"]:
            return f"max_dup_line_frac: {st['dup_line_frac']:.2f}"
        if st["dup_line_char_frac"] > p["max_dup_line_char_frac"]:
            return f"max_dup_line_char_frac: {st['dup_line_char_frac']:.2f}"
        if st["top_ngram_frac"] > p["max_top_ngram_frac"]:
            return f"max_top_ngram_frac: {st['top_ngram_frac']:.2f}"
        if st["lines"] > 3 and st["end_punct_frac"] < p["min_end_punct_frac"]:
            return f"min_end_punct_frac: {st['end_punct_frac']:.2f}"
        if st["lines"] > 3 and st["bullet_frac"] > p["max_bullet_line_frac"]:
            return f"max_bullet_line_frac: {st['bullet_frac']:.2f}"
        if self.bad:
            low = doc["text"].lower()
            for s in self.bad:
                if s in low:
                    return f"bad_substrings: {s}"
        if st["cjk"]:
            if lang == "zh" and st["han_ratio"] < p["min_cjk_ratio"]:
                return f"min_cjk_ratio: {st['han_ratio']:.2f}"
            return None
        if st["words"] < p["min_words"]:
            return f"min_words: {st['words']} < {p['min_words']}"
        if st["words"] > p["max_words"]:
            return f"max_words: {st['words']}"
        if not p["min_mean_word_len"] <= st["mean_word_len"] <= p["max_mean_word_len"]:
            return f"mean_word_len: {st['mean_word_len']:.1f}"
        if st["alpha_word_frac"] < p["min_alpha_word_frac"]:
            return f"min_alpha_word_frac: {st['alpha_word_frac']:.2f}"
        if lang == "en" and st["stopwords"] < p["min_stopwords"]:
            return f"min_stopwords: {st['stopwords']} < {p['min_stopwords']}"
        return None
