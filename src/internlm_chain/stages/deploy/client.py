"""A small OpenAI-compatible chat client on the standard library (no `openai` in the ichain core).

Speaks to LMDeploy's api_server/proxy and the CPU stand-in alike: plain and SSE-streamed
`/v1/chat/completions` (the stand-in ends a stream without `data: [DONE]`; LMDeploy sends it).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit


class ClientError(Exception):
    pass


@dataclass
class Reply:
    text: str
    completion_tokens: int | None
    latency_s: float
    first_token_s: float | None = None


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http(s) URL: {url}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=timeout), parts.path.rstrip("/")


def _headers(api_key: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def chat(url: str, model: str, messages: list[dict], *, max_tokens: int = 128, api_key: str | None = None,
         temperature: float | None = None, timeout: float = 600.0) -> Reply:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": False}
    if temperature is not None:
        body["temperature"] = temperature
    conn, base = _connection(url, timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", base + "/v1/chat/completions", json.dumps(body), _headers(api_key))
        resp = conn.getresponse()
        data = resp.read()
    except OSError as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise ClientError(f"{url} answered {resp.status}: {data[:300].decode('utf-8', 'replace')}")
    payload = json.loads(data)
    text = payload["choices"][0]["message"].get("content") or ""
    usage = payload.get("usage") or {}
    return Reply(text, usage.get("completion_tokens"), time.perf_counter() - t0)


def stream_chat(url: str, model: str, messages: list[dict], *, max_tokens: int = 128, api_key: str | None = None,
                temperature: float | None = None, timeout: float = 600.0) -> Iterator[str | Reply]:
    """Yields text pieces as they arrive, then one final `Reply` (full text, token count, timings)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    if temperature is not None:
        body["temperature"] = temperature
    conn, base = _connection(url, timeout)
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    tokens = None
    chunks = 0
    try:
        conn.request("POST", base + "/v1/chat/completions", json.dumps(body), _headers(api_key))
        resp = conn.getresponse()
        if resp.status != 200:
            raise ClientError(f"{url} answered {resp.status}: {resp.read()[:300].decode('utf-8', 'replace')}")
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("usage"):
                tokens = event["usage"].get("completion_tokens", tokens)
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - t0
                    pieces.append(piece)
                    yield piece
    except OSError as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from None
    finally:
        conn.close()
    yield Reply("".join(pieces), tokens if tokens is not None else chunks, time.perf_counter() - t0, first)
