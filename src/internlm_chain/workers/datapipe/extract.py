"""Main text from HTML: trafilatura (clean, default) or resiliparse (about 6x faster, keeps more boilerplate)."""

from __future__ import annotations


class Extractor:
    def __init__(self, engine: str = "trafilatura", min_chars: int = 20, include_tables: bool = True):
        self.engine = engine
        self.min_chars = min_chars
        self.include_tables = include_tables
        if engine == "trafilatura":
            import trafilatura

            self._traf = trafilatura
        else:
            from resiliparse.extract.html2text import extract_plain_text

            self._resi = extract_plain_text

    def extract(self, html: str) -> str:
        if self.engine == "trafilatura":
            text = self._traf.extract(html, include_comments=False, include_tables=self.include_tables,
                                      deduplicate=False, favor_precision=False) or ""
        else:
            text = self._resi(html, main_content=True, alt_texts=False, links=False, list_bullets=False)
        return text.strip()

    def __call__(self, doc: dict):
        html = doc.pop("html", None)
        if html is None:
            return None
        try:
            text = self.extract(html)
        except Exception as exc:  # a parser crash on one page must not stop the shard
            return f"extraction failed: {type(exc).__name__}"
        if len(text) < self.min_chars:
            return f"no main text (<{self.min_chars} chars)"
        doc["text"] = text
        return None
