"""Step objects from {name, params}: document steps are callables doc -> None (keep) | reason (drop)."""

from __future__ import annotations

from .dedup import ExactCollector, LineCollector, NearCollector
from .modelfilter import Classifier, OutlierCollector


def build_doc_step(step: dict, languages: list[str]):
    name, p = step["name"], step["params"]
    if name == "extract":
        from .extract import Extractor

        return Extractor(**p)
    if name == "normalise":
        from .normalise import Normaliser

        return Normaliser(**p)
    if name == "langid":
        from .langid import LangId

        return LangId(languages, **p)
    if name == "rules":
        from .rules import Rules

        return Rules(**p)
    if name == "classifier":
        return Classifier(**p)
    if name == "safety":
        from .safety import Safety

        return Safety(**p)
    raise ValueError(f"unknown document step {name}")


def build_collector(step: dict):
    name, p = step["name"], step["params"]
    if name == "dedup_exact":
        return ExactCollector(**p)
    if name == "dedup_near":
        return NearCollector(**p)
    if name == "dedup_lines":
        return LineCollector(**p)
    if name == "outlier":
        return OutlierCollector()
    raise ValueError(f"unknown global step {name}")
