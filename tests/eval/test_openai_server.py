"""The shared scripted OpenAI server (tests/support/scripted_openai.py) speaks the API clients expect."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from tests.support.scripted_openai import ScriptedOpenAI


def post(url: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_models_chat_stream_and_unknown_model():
    with ScriptedOpenAI(["one", "two"], model="m", strict_model=True) as srv:
        with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as resp:
            assert [m["id"] for m in json.load(resp)["data"]] == ["m"]
        msgs = [{"role": "user", "content": "hi"}]
        code, text = post(srv.base_url + "/chat/completions", {"model": "m", "messages": msgs})
        assert code == 200 and json.loads(text)["choices"][0]["message"]["content"] == "one"
        code, text = post(srv.base_url + "/chat/completions", {"model": "m", "messages": msgs, "stream": True})
        chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert code == 200 and streamed == "two" and text.rstrip().endswith("[DONE]")
        code, _ = post(srv.base_url + "/chat/completions", {"model": "other", "messages": msgs})
        assert code == 404
        assert len(srv.requests) == 3


def test_stopped_server_refuses_connections():
    srv = ScriptedOpenAI(["x"]).start()
    url = srv.base_url + "/models"
    srv.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
