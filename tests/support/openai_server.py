"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat API with scripted replies.

For tests of anything that talks to an OpenAI-compatible endpoint (OpenCompass API models, Lagent
agents, the deploy stage's clients) where a model that follows instructions cannot exist on a CPU:

    with OpenAIServer(model="tiny", reply=lambda messages: "A") as srv:
        srv.base_url   # http://127.0.0.1:PORT/v1
        srv.requests   # every JSON body received, in order

`reply` gets the request's messages and returns the assistant text; or pass `replies=[...]` to answer
in turn (the last one repeats). Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions
(plain JSON, or SSE when the request sets "stream": true), POST /v1/completions. Unknown model names
get 404 like LMDeploy does. Standard library only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIServer:
    def __init__(self, model: str = "test-model", reply: Callable[[list[dict]], str] | None = None,
                 replies: list[str] | None = None, host: str = "127.0.0.1", port: int = 0):
        self.model = model
        self._reply = reply
        self._replies = list(replies or [])
        self._turn = 0
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self.auth: list[str | None] = []  # the Authorization header of each POST
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- replies ----
    def answer(self, messages: list[dict]) -> str:
        with self._lock:
            if self._reply is not None:
                return self._reply(messages)
            if not self._replies:
                return ""
            text = self._replies[min(self._turn, len(self._replies) - 1)]
            self._turn += 1
            return text

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok"})
                elif self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0, "owned_by": "tests"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                with server._lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                route = self.path.rstrip("/")
                if route not in ("/v1/chat/completions", "/v1/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if body.get("model") not in (None, server.model):
                    self._send(404, {"error": {"message": f"model '{body.get('model')}' is not served",
                                               "type": "invalid_request_error"}})
                    return
                chat = route.endswith("chat/completions")
                messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
                text = server.answer(messages)
                now = int(time.time())
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                if body.get("stream"):
                    self._stream(text, now, chat)
                    return
                if chat:
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    kind = "chat.completion"
                else:
                    choice = {"index": 0, "text": text, "finish_reason": "stop"}
                    kind = "text_completion"
                self._send(200, {"id": f"cmpl-{len(server.requests)}", "object": kind, "created": now,
                                 "model": server.model, "choices": [choice], "usage": usage})

            def _stream(self, text: str, now: int, chat: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                delta = {"delta": {"role": "assistant", "content": text}} if chat else {"text": text}
                for payload in ({"index": 0, **delta, "finish_reason": None},
                                {"index": 0, "delta": {}, "finish_reason": "stop"} if chat
                                else {"index": 0, "text": "", "finish_reason": "stop"}):
                    chunk = {"id": "cmpl-stream", "object": "chat.completion.chunk" if chat else "text_completion",
                             "created": now, "model": server.model, "choices": [payload]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler


def unused_port() -> int:
    """A port nothing listens on (for unreachable-endpoint tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
