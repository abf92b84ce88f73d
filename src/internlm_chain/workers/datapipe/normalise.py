"""Encoding repair and Unicode normalisation that leaves Chinese punctuation alone.

NFKC is deliberately not used: it turns full-width Chinese punctuation (，。！？：；) into ASCII.
Only full-width letters and digits are folded to ASCII; everything else gets NFC.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

# UTF-8 bytes decoded as Latin-1/cp1252 leave these pairs; only then is ftfy (slow) worth running.
_MOJIBAKE_LEAD = re.compile("[\u00c2-\u00f4]")
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u2013-\u203a\u0152-\u0178\u02c6\u02dc\u00a0-\u00bf]")
_CONTROL = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200d\u2060\ufeff\ufffe]")
_SPACES = re.compile("[ \t\u00a0\u2000-\u200a\u202f\u205f]+")
_BLANKS = re.compile(r"\n{3,}")
# full-width digits and letters only (U+FF10–FF19, FF21–FF3A, FF41–FF5A)
_FULLWIDTH_ALNUM = {c: c - 0xFEE0 for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
                    for c in range(r[0], r[1] + 1)}
_HAN = re.compile("[\u4e00-\u9fff]")
_FULLWIDTH_ANY = re.compile("[\uff10-\uff5a]")
_ODD_SPACE = re.compile("[\t\u00a0\u2000-\u200a\u202f\u205f]")


_SPECIAL: np.ndarray | None = None


def _special_table() -> np.ndarray:
    """BMP code points any of the steps below could act on: mojibake lead characters, control and
    zero-width characters, full-width letters/digits, odd spaces, CR and the ideographic space."""
    global _SPECIAL
    if _SPECIAL is None:
        chars = "".join(map(chr, range(65536)))
        t = np.zeros(65536, dtype=bool)
        for pattern in (_MOJIBAKE_LEAD, _CONTROL, _FULLWIDTH_ANY, _ODD_SPACE, re.compile("[\r\u3000]")):
            t[[m.start() for m in pattern.finditer(chars)]] = True
        _SPECIAL = t
    return _SPECIAL


def _plain(text: str) -> bool:
    """True when no step but NFC can change the text: one table lookup over the code points instead of
    five regex scans (most documents are plain)."""
    c = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    if _special_table()[np.minimum(c, 0xFFFF)].any():
        return False
    return not (text[:1].isspace() or text[-1:].isspace() or "  " in text or " \n" in text or "\n " in text
                or "\n\n\n" in text)


def _needs_ws_pass(text: str) -> bool:
    """Whether the whitespace pass could change anything (plain substring tests: far cheaper than it)."""
    return (text[:1].isspace() or text[-1:].isspace() or "  " in text or " \n" in text or "\n " in text
            or "\n\n\n" in text or "\u3000" in text or _ODD_SPACE.search(text) is not None)


class Normaliser:
    def __init__(self, fix_encoding=True, fullwidth_alnum=True, strip_control=True, collapse_whitespace=True,
                 traditional_to_simplified=False):
        self.fix_encoding = fix_encoding
        self.fullwidth_alnum = fullwidth_alnum
        self.strip_control = strip_control
        self.collapse_whitespace = collapse_whitespace
        self._t2s = None
        if traditional_to_simplified:
            import opencc

            self._t2s = opencc.OpenCC("t2s")

    def normalise(self, text: str) -> str:
        if self._t2s is None and _plain(text):
            # NFC maps nothing into the special set (its only such singletons, U+2000/2001, are in it)
            return text if text.isascii() else unicodedata.normalize("NFC", text)
        if self.fix_encoding and _MOJIBAKE.search(text):
            import ftfy

            text = ftfy.fix_text(text, normalization=None)
        if not text.isascii():
            text = unicodedata.normalize("NFC", text)
            if self.fullwidth_alnum and _FULLWIDTH_ANY.search(text):
                text = text.translate(_FULLWIDTH_ALNUM)
        if self.strip_control:
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            text = _CONTROL.sub("", text)
        # the per-line pass below is the slow part; most documents need none of it
        if self.collapse_whitespace and _needs_ws_pass(text):
            # the ideographic space (U+3000) indents Chinese paragraphs: drop it at line starts only
            text = "\n".join(_SPACES.sub(" ", line).strip(" \u3000") for line in text.split("\n"))
            text = _BLANKS.sub("\n\n", text).strip()
        if self._t2s is not None and _HAN.search(text):
            text = self._t2s.convert(text)
        return text

    def __call__(self, doc: dict):
        doc["text"] = self.normalise(doc["text"])
        if "messages" in doc:
            for m in doc["messages"]:
                m["content"] = self.normalise(m["content"])
        if not doc["text"]:
            return "empty after normalisation"
        return None
