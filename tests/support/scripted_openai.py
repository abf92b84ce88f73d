"""A real OpenAI-compatible HTTP server on 127.0.0.1 whose replies are scripted by the test.

Stands in for an LLM that follows instructions (which a CPU test cannot have): the client under test
talks real HTTP to it. Every request body is recorded, so a test can assert that a tool's result
reached the model in the next request.

    with ScriptedOpenAI(["Thought: ...\\nAction: Calculator\\n...", "Final Answer: 4"]) as srv:
        srv.base_url   # http://127.0.0.1:PORT/v1
        srv.requests   # the JSON bodies received, in order

A reply is a string (the assistant message), a `Reply(...)` (HTTP status / raw body / delay), or a
callable of the request body returning either. A list is consumed in order; the last entry repeats.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = None  # assistant text (ignored when `raw` is set)
    status: int = 200
    raw: bytes | None = None  # sent verbatim: garbage, an error body
    delay_s: float = 0.0
    content_type: str = "application/json"


Script = list[Any] | Callable[[dict], Any]


class ScriptedOpenAI:
    def __init__(self, script: Script, model: str = "scripted-model", strict_model: bool = False):
        self.script = script
        self.model = model
        self.strict_model = strict_model  # like real servers: 404 for a model name it does not serve
        self.requests: list[dict] = []
        self.auth: list[str | None] = []  # the Authorization header of each chat request
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ScriptedOpenAI:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    # ---- scripting -----------------------------------------------------------------------------
    def next_reply(self, body: dict, auth: str | None = None) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.auth.append(auth)
            index = len(self.requests) - 1
        if callable(self.script):
            item = self.script(body)
        else:
            item = self.script[min(index, len(self.script) - 1)]
        return item if isinstance(item, Reply) else Reply(content=str(item))

    def messages(self, index: int) -> list[dict]:
        return self.requests[index].get("messages", [])

    def text_of(self, index: int) -> str:
        """All message contents of request `index`, joined: handy for `in` assertions."""
        return "\n".join(str(m.get("content", "")) for m in self.messages(index))


def _completion(model: str, content: str) -> dict:
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _chunk(model: str, delta: dict, finish: str | None) -> bytes:
    data = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def _handler_for(server: ScriptedOpenAI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.paths.append(self.path)
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                body = {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "test"}]}
                self._send(200, json.dumps(body).encode())
            elif self.path == "/health":
                self._send(200, b"{}")
            else:
                self._send(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:
            server.paths.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, b'{"error": {"message": "not found"}}')
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, b'{"error": {"message": "request body is not JSON"}}')
                return
            if server.strict_model and body.get("model") not in (None, server.model):
                server.requests.append(body)
                self._send(404, json.dumps({"error": {"message": f"model '{body.get('model')}' is not served",
                                                      "type": "invalid_request_error"}}).encode())
                return
            reply = server.next_reply(body, self.headers.get("Authorization"))
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.raw is not None or reply.status != 200:
                self._send(reply.status, reply.raw or b"", reply.content_type)
                return
            content = reply.content or ""
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(_chunk(server.model, {"role": "assistant"}, None))
                for i in range(0, len(content), 8):
                    self.wfile.write(_chunk(server.model, {"content": content[i:i + 8]}, None))
                self.wfile.write(_chunk(server.model, {}, "stop"))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(200, json.dumps(_completion(server.model, content)).encode())

    return Handler


def unused_port() -> int:
    """A port nothing listens on (for unreachable-endpoint tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
