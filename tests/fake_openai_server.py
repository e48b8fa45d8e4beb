"""A local server that speaks the OpenAI protocol over a real socket and misbehaves on purpose.

Used only for fault injection: each request's behaviour on each attempt comes
from a script keyed by the request's user message (or prompt). Replies are
deterministic, so a test can check that every sample arrived exactly once.

Faults: "429", "500", "400" (permanent), "slow" (sleeps past the client's
time-out), "drop" (closes the socket without a reply), "malformed" (HTTP 200
with broken JSON), "nochoices" (valid JSON without choices), "ok".
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultyOpenAIServer:
    def __init__(self, script: dict[str, list[str]] | None = None, ignore_n: bool = False, slow_seconds: float = 3.0,
                 reply_text: Any = None, reply_body: Any = None):
        self.script = script or {}
        self.reply_text = reply_text  # optional (key, seed, index) -> text
        self.reply_body = reply_body  # optional (request body, index) -> text: scripted model replies
        self.ignore_n = ignore_n
        self.slow_seconds = slow_seconds
        self.attempts: dict[str, int] = defaultdict(int)
        self.served: list[dict[str, Any]] = []  # successful replies: key, n, seed
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FaultyOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                chat = self.path.endswith("/chat/completions")
                key = body["messages"][-1 if body["messages"][-1]["role"] == "user" else -2]["content"] if chat else body["prompt"]
                with server.lock:
                    attempt = server.attempts[key]
                    server.attempts[key] += 1
                plan = server.script.get(key, [])
                fault = plan[attempt] if attempt < len(plan) else "ok"
                if fault in ("429", "500", "400"):
                    return self._send(int(fault), {"error": {"message": f"injected {fault}", "type": "test"}})
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                    return self._send(200, self._reply(body, key, chat))
                if fault == "drop":
                    self.connection.shutdown(2)
                    self.connection.close()
                    return
                if fault == "malformed":
                    raw = b'{"id": "x", "choices": [{"index": 0, "text": "trunc'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                if fault == "nochoices":
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m"})
                reply = self._reply(body, key, chat)
                with server.lock:
                    server.served.append({"key": key, "n": len(reply["choices"]), "seed": body.get("seed")})
                self._send(200, reply)

            def _reply(self, body: dict, key: str, chat: bool) -> dict:
                n = 1 if server.ignore_n else int(body.get("n") or 1)
                seed = body.get("seed")
                choices = []
                for i in range(n):
                    if server.reply_body is not None:
                        text = server.reply_body(body, i)
                    elif server.reply_text is not None:
                        text = server.reply_text(key, seed, i)
                    else:
                        text = f"{key}|seed={seed}|i={i}"
                    choice = {"index": i, "finish_reason": "stop", "logprobs": None}
                    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                    choices.append(choice)
                return {
                    "id": "cmpl-test", "object": "chat.completion" if chat else "text_completion", "created": 0,
                    "model": body["model"], "choices": choices,
                    "usage": {"prompt_tokens": 11, "completion_tokens": 5 * n, "total_tokens": 11 + 5 * n},
                }

            def _send(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler
