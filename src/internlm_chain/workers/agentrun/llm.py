"""Our OpenAI-compatible chat client for Lagent agents.

Lagent 0.2.4's GPTAPI rewrites the request by model-name prefix (and rejects names it does not know),
retries forever on connection errors, has no timeout, and ReWOO's solver step hands it a plain string it
cannot take. This client speaks the plain OpenAI chat API for any served name, takes a base URL or the
full `/chat/completions` URL, bounds every request and the number of attempts, surfaces the server's
own error text, and cuts replies at the stop words itself (servers differ in how they honour `stop`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from lagent.llms.base_api import BaseAPIModel
from lagent.schema import ModelStatusCode

from .errors import LLMError
from .urls import chat_url, cut_at_stop, models_url

API_ROLES = [
    dict(role="system", api_role="system"),
    dict(role="user", api_role="user"),
    dict(role="assistant", api_role="assistant"),
    # tool results (InternLM2 protocol) go back as system messages, as GPTAPI does
    dict(role="environment", api_role="system"),
]
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


def check_endpoint(url: str, served_name: str, api_key: str | None, timeout_s: float) -> list[str]:
    """Fail fast (bounded time) when nothing answers; return the served model names when listed."""
    req = urllib.request.Request(models_url(url), headers=_headers(api_key))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = json.loads(resp.read().decode("utf-8", "replace") or "{}")
    except urllib.error.HTTPError:
        return []  # answers, just without a model list (or needs another path): the chat call will tell
    except (urllib.error.URLError, OSError) as exc:
        raise LLMError(f"cannot reach the LLM endpoint {url}: {_reason(exc)}") from None
    except ValueError:
        return []
    names = [m.get("id", "") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body, dict) else []
    return [n for n in names if n]


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class OpenAIChat(BaseAPIModel):
    """A Lagent API model over any OpenAI-compatible `/v1/chat/completions` endpoint."""

    is_api = True

    def __init__(self, url: str, served_name: str, *, api_key_env: str | None = None, timeout_s: float = 60.0,
                 retries: int = 2, extra_body: dict | None = None, recorder: Any = None,
                 max_new_tokens: int = 512, temperature: float = 0.0, top_p: float = 1.0,
                 stop_words: list[str] | None = None):
        super().__init__(model_type=served_name, meta_template=API_ROLES, retry=retries,
                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         stop_words=list(stop_words or []))
        self.url = chat_url(url)
        self.served_name = served_name
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout_s = timeout_s
        self.retries = retries
        self.extra_body = dict(extra_body or {})
        self.recorder = recorder

    # ---- Lagent's model interface --------------------------------------------------------------
    def chat(self, inputs, **gen_params):
        """A message list, a batch of them, or (ReWOO's solver) a plain prompt string."""
        if isinstance(inputs, str):
            return self._complete([{"role": "user", "content": inputs}], gen_params)
        if inputs and isinstance(inputs[0], list):
            return [self._complete(self._to_api(m), gen_params) for m in inputs]
        return self._complete(self._to_api(inputs), gen_params)

    def generate(self, inputs, **gen_params):
        if isinstance(inputs, list):
            return [self.chat(i, **gen_params) for i in inputs]
        return self.chat(inputs, **gen_params)

    def stream_chat(self, inputs, **gen_params):
        messages = [{"role": "user", "content": inputs}] if isinstance(inputs, str) else self._to_api(inputs)
        params = self.update_gen_params(**gen_params)
        text, started = "", time.monotonic()
        for piece in self._stream(messages, params):
            text += piece
            text, stopped = cut_at_stop(text, params.get("stop_words"))
            yield ModelStatusCode.STREAM_ING, text, None
            if stopped:
                break
        self._record(messages, text, time.monotonic() - started)
        yield ModelStatusCode.END, text, None

    # ---- plumbing ------------------------------------------------------------------------------
    def _to_api(self, messages: list[dict]) -> list[dict]:
        converted = self.template_parser._prompt2api(messages)
        # role and content only: some servers reject the extra keys Lagent carries (e.g. `name`)
        return [{"role": m["role"], "content": str(m.get("content", ""))} for m in converted]

    def _body(self, messages: list[dict], params: dict, stream: bool) -> dict:
        body = {"model": self.served_name or None, "messages": messages, "max_tokens": params.get("max_new_tokens"),
                "temperature": params.get("temperature"), "top_p": params.get("top_p"), "stream": stream}
        stop = [w for w in params.get("stop_words") or [] if w]
        if stop:
            body["stop"] = stop[:4]  # the OpenAI API takes at most four; the rest are cut here
        body.update(self.extra_body)
        return {k: v for k, v in body.items() if v is not None}

    def _complete(self, messages: list[dict], gen_params: dict) -> str:
        params = self.update_gen_params(**gen_params)
        started = time.monotonic()
        raw = self._post(self._body(messages, params, stream=False))
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"{self.url} returned something that is not an OpenAI chat completion: "
                           f"{_excerpt(raw)}") from None
        text, _ = cut_at_stop(content, params.get("stop_words"))
        self._record(messages, text, time.monotonic() - started)
        return text

    def _record(self, messages: list[dict], text: str, duration: float) -> None:
        if self.recorder is not None:
            self.recorder.llm(messages, text, duration)

    def _open(self, body: dict):
        """urlopen with bounded attempts; returns the response object (caller closes it)."""
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
            req = urllib.request.Request(self.url, data=data, headers=_headers(self.api_key), method="POST")
            try:
                return urllib.request.urlopen(req, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                last = f"{self.url} answered HTTP {exc.code}: {_server_message(text)}"
                if exc.code not in RETRYABLE_STATUS:
                    raise LLMError(last) from None
            except (urllib.error.URLError, OSError) as exc:
                last = f"cannot reach the LLM endpoint {self.url}: {_reason(exc)}"
            print(f"agentrun: {last} (attempt {attempt + 1}/{self.retries + 1})", file=sys.stderr)
        raise LLMError(f"{last} (gave up after {self.retries + 1} attempts)")

    def _post(self, body: dict) -> str:
        resp = self._open(body)
        try:
            return resp.read().decode("utf-8", "replace")
        except (OSError, TimeoutError) as exc:
            raise LLMError(f"reading the reply of {self.url} failed: {_reason(exc)}") from None
        finally:
            resp.close()

    def _stream(self, messages: list[dict], params: dict):
        resp = self._open(self._body(messages, params, stream=True))
        try:
            for line in resp:
                line = line.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                try:
                    choice = json.loads(payload)["choices"][0]
                except (ValueError, KeyError, IndexError, TypeError):
                    raise LLMError(f"{self.url} sent a stream chunk that is not OpenAI's: {_excerpt(payload)}") from None
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece
        except (OSError, TimeoutError) as exc:
            raise LLMError(f"the stream from {self.url} broke: {_reason(exc)}") from None
        finally:
            resp.close()


def _excerpt(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text[:n] + ("…" if len(text) > n else ""))


def _server_message(text: str) -> str:
    """The server's own error message when the body is OpenAI-style JSON, else the body's start."""
    try:
        data = json.loads(text)
    except ValueError:
        return _excerpt(text) if text.strip() else "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if err:
            return str(err)[:500]
    return _excerpt(text)
