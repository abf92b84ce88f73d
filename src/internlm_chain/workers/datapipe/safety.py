"""Value alignment: blocklists (Aho-Corasick over the lower-cased text), a classifier hook, PII masking.

Documents with `drop_hits` or more blocklist hits (or a classifier score >= `classifier_drop`) are
dropped; those with `review_hits` or more (or >= `classifier_review`) are kept and written to the
review file for the human pass.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from .modelfilter import FastTextScorer

# A small illustrative default; real deployments pass their own lists (words_file / domains_file).
DEFAULT_WORDS = ["六合彩", "网络赌博", "赌博网站", "色情网站", "代开发票", "枪支出售", "冰毒出售",
                 "online casino", "casino bonus", "buy cocaine", "porn site", "escort service"]
DEFAULT_DOMAINS = ["casino.example", "porn.example"]

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}")
# Chinese mobile numbers (optionally +86), and international/US-style numbers with separators
CN_MOBILE = re.compile(r"(?<![\d])(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\d)")
CN_ID = re.compile(r"(?<![\dA-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_valid(number: str) -> bool:
    """GB 11643-1999 checksum of an 18-character resident ID number."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=False))
    return _ID_CHECK[total % 11] == number[17].upper()


def mask_pii(text: str, kinds) -> tuple[str, dict]:
    counts: dict[str, int] = {}

    def sub(pattern, token, kind, check=None):
        nonlocal text

        def repl(m):
            if check and not check(m.group(0)):
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            return token

        text = pattern.sub(repl, text)

    if "email" in kinds and "@" in text:
        sub(EMAIL, "[EMAIL]", "email")
    if "cn_id" in kinds:
        sub(CN_ID, "[ID]", "cn_id", cn_id_valid)
    if "phone" in kinds:
        sub(CN_MOBILE, "[PHONE]", "phone")
        sub(PHONE, "[PHONE]", "phone")
    return text, counts


def _read_list(path: str | None) -> list[str]:
    if not path:
        return []
    with open(path, encoding="utf-8") as fh:
        return [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]


class Safety:
    def __init__(self, words=None, words_file=None, domains=None, domains_file=None, drop_hits=3, review_hits=1,
                 classifier=None, classifier_label="__label__unsafe", classifier_drop=0.9,
                 classifier_review=0.5, pii=("email", "phone", "cn_id")):
        import ahocorasick

        word_list = (DEFAULT_WORDS if words is None else list(words)) + _read_list(words_file)
        self.automaton = None
        if word_list:
            self.automaton = ahocorasick.Automaton()
            for w in word_list:
                self.automaton.add_word(w.lower(), w)
            self.automaton.make_automaton()
        self.domains = tuple(d.lower().lstrip(".") for d in
                             (DEFAULT_DOMAINS if domains is None else list(domains)) + _read_list(domains_file))
        self.drop_hits = drop_hits
        self.review_hits = review_hits
        self.scorer = FastTextScorer(classifier, classifier_label) if classifier else None
        self.classifier_drop = classifier_drop
        self.classifier_review = classifier_review
        self.pii = tuple(pii or ())

    def _domain_blocked(self, url: str) -> str | None:
        host = (urlparse(url).hostname or "").lower()
        for d in self.domains:
            if host == d or host.endswith("." + d):
                return d
        return None

    def __call__(self, doc: dict):
        meta = doc["meta"]
        url = meta.get("url")
        if url and self.domains:
            d = self._domain_blocked(str(url))
            if d:
                return f"blocked_domain: {d}"
        if self.automaton is not None:
            hits = [w for _, w in self.automaton.iter(doc["text"].lower())]
            if hits:
                meta["blocklist_hits"] = len(hits)
                if len(hits) >= self.drop_hits:
                    return f"blocklist: {len(hits)} hits ({', '.join(sorted(set(hits))[:5])})"
                if len(hits) >= self.review_hits:
                    doc.setdefault("_review", []).append(f"blocklist: {', '.join(sorted(set(hits))[:5])}")
        if self.scorer is not None:
            s = self.scorer.score(doc["text"])
            meta.setdefault("scores", {})["unsafe"] = round(s, 4)
            if s >= self.classifier_drop:
                return f"unsafe_classifier: {s:.2f}"
            if s >= self.classifier_review:
                doc.setdefault("_review", []).append(f"unsafe_classifier: {s:.2f}")
        if self.pii:
            doc["text"], counts = mask_pii(doc["text"], self.pii)
            for m in doc.get("messages") or ():
                m["content"], _ = mask_pii(m["content"], self.pii)
            if counts:
                meta["pii_masked"] = counts
                doc.pop("_stats", None)
        return None
