"""Model-based filters: a pluggable fastText-format classifier, and the unsupervised outlier filter.

The outlier filter is corpus-level: per language it estimates median and MAD of each document
feature (from a bounded sample), then drops documents whose largest robust z-score exceeds `max_z`
and sends those above `review_z` to the human-review file.
"""

from __future__ import annotations

import numpy as np

from .features import OUTLIER_FEATURES, outlier_vector
from .langid import load_fasttext


class FastTextScorer:
    """P(label) from a fastText model file (.bin/.ftz); the label's absence among the outputs is 0."""

    def __init__(self, path: str, label: str, max_chars: int = 4000):
        self.model = load_fasttext(path)
        self.label = label if label.startswith("__label__") else "__label__" + label
        self.max_chars = max_chars
        n = len(self.model.get_labels())
        self.k = n

    def score(self, text: str) -> float:
        labels, probs = self.model.predict(text[: self.max_chars].replace("\n", " "), k=self.k)
        for lab, pr in zip(labels, probs, strict=False):
            if lab == self.label:
                return float(pr)
        return 0.0


class Classifier:
    def __init__(self, model, label="__label__hq", threshold=0.5, max_chars=4000):
        self.scorer = FastTextScorer(model, label, max_chars)
        self.threshold = threshold

    def __call__(self, doc: dict):
        s = self.scorer.score(doc["text"])
        doc["meta"].setdefault("scores", {})["quality"] = round(s, 4)
        if s < self.threshold:
            return f"quality: {s:.2f} < {self.threshold}"
        return None


class OutlierCollector:
    """Per shard: (language, feature vector) of each surviving document."""

    def __init__(self):
        self.langs: list[str] = []
        self.rows: list[list[float]] = []

    def add(self, doc: dict) -> None:
        self.langs.append(doc["meta"].get("lang", "?"))
        self.rows.append(outlier_vector(doc))

    def save(self, path_prefix: str) -> None:
        np.save(path_prefix + ".feat.npy", np.asarray(self.rows, dtype=np.float32).reshape(-1, len(OUTLIER_FEATURES)))
        with open(path_prefix + ".lang.txt", "w", encoding="utf-8") as fh:
            fh.write("\n".join(self.langs))


def robust_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.median(feats, axis=0)
    mad = np.median(np.abs(feats - med), axis=0) * 1.4826
    # features that barely vary in this language would make every small change an "outlier"
    floor = np.maximum(np.abs(med) * 0.05, 0.02)
    return med, np.maximum(mad, floor)


def zscores(feats: np.ndarray, med: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if len(feats) == 0:
        return np.zeros(0, dtype=np.float32)
    return (np.abs(feats - med) / scale).max(axis=1)
