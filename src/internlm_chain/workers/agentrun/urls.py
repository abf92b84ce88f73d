"""Endpoint URLs and stop words (stdlib only, so they are testable without the runtime)."""

from __future__ import annotations


def chat_url(url: str) -> str:
    """`http://h:p`, `http://h:p/v1` or the full `…/chat/completions` URL → the full URL."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def models_url(url: str) -> str:
    return chat_url(url)[: -len("/chat/completions")] + "/models"


def cut_at_stop(text: str, stop_words: list[str] | None) -> tuple[str, bool]:
    """The text before the first stop word (and whether one was found)."""
    cut = len(text)
    for word in stop_words or []:
        if word:
            i = text.find(word)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut < len(text)
