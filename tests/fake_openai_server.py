"""A local server that speaks the OpenAI protocol over a real socket and misbehaves on purpose.

Used only for fault injection: each request's behaviour on each attempt comes
from a script keyed by the request's user message (or prompt). Replies are
deterministic, so a test can check that every sample arrived exactly once.

Faults: "429", "500", "400" (permanent), "401" (a wrong key, refused as OpenAI
refuses it: "Incorrect API key provided: <the key sent>"), "slow" (sleeps past the
client's time-out), "drop" (closes the socket without a reply), "malformed" (HTTP
200 with broken JSON), "nochoices" (valid JSON without choices), "ok". ``default``
is the plan of every request the script does not name; ``echo_key`` puts the key the
client sent (its ``Authorization: Bearer`` header) into every injected error
message, as some servers do.

How a reply ends can be made to look like a real engine's: ``emulate_stops``
applies the request's ``stop`` strings and ``max_tokens`` (a word counts as a
token), and ``send_stop_reason`` adds vLLM's ``stop_reason`` field to every
choice (the stop string that fired, a stop token id, or null when the model
ended or was cut at max_tokens), as ``vllm serve`` does. A ``reply_body`` may also
return a dict with ``text``, ``finish_reason`` and ``stop_reason`` to script a
choice exactly. ``usage`` is per request, ``tokens_per_choice`` times the number
of choices, like a real server's total over all choices.
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
                 reply_text: Any = None, reply_body: Any = None, emulate_stops: bool = False,
                 send_stop_reason: bool = False, tokens_per_choice: int = 5, default: list[str] | None = None,
                 echo_key: bool = False):
        self.script = script or {}
        self.default = list(default or [])
        self.echo_key = echo_key
        self.reply_text = reply_text  # optional (key, seed, index) -> text
        self.reply_body = reply_body  # optional (request body, index) -> text or choice dict: scripted model replies
        self.emulate_stops = emulate_stops
        self.send_stop_reason = send_stop_reason
        self.tokens_per_choice = tokens_per_choice
        self.ignore_n = ignore_n
        self.slow_seconds = slow_seconds
        self.attempts: dict[str, int] = defaultdict(int)
        self.served: list[dict[str, Any]] = []  # successful replies: key, n, seed, completion_tokens (usage)
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
                plan = server.script.get(key, server.default)
                fault = plan[attempt] if attempt < len(plan) else "ok"
                sent_key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if fault == "401":
                    return self._send(401, {"error": {
                        "message": f"Incorrect API key provided: {sent_key}. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error", "code": "invalid_api_key"}})
                if fault in ("429", "500", "400"):
                    message = f"injected {fault}" + (f" for key {sent_key}" if server.echo_key else "")
                    return self._send(int(fault), {"error": {"message": message, "type": "test"}})
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
                    server.served.append({"key": key, "n": len(reply["choices"]), "seed": body.get("seed"),
                                          "completion_tokens": reply["usage"]["completion_tokens"]})
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
                    if isinstance(text, dict):  # a scripted ending
                        text, finish_reason, stop_reason = text["text"], text["finish_reason"], text.get("stop_reason")
                    elif server.emulate_stops:
                        text, finish_reason, stop_reason = end_like_an_engine(text, body)
                    else:
                        finish_reason, stop_reason = "stop", None
                    choice = {"index": i, "finish_reason": finish_reason, "logprobs": None}
                    if server.send_stop_reason:
                        choice["stop_reason"] = stop_reason  # null included, as vLLM's server sends it
                    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                    choices.append(choice)
                tokens = server.tokens_per_choice * n
                return {
                    "id": "cmpl-test", "object": "chat.completion" if chat else "text_completion", "created": 0,
                    "model": body["model"], "choices": choices,
                    "usage": {"prompt_tokens": 11, "completion_tokens": tokens, "total_tokens": 11 + tokens},
                }

            def _send(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


def end_like_an_engine(text: str, body: dict) -> tuple[str, str, str | None]:
    """The reply as an engine would end it: (text, finish_reason, stop_reason).

    Words stand for tokens. The stop string that completes first ends the text (cut
    before it) unless ``max_tokens`` words come first; ``stop_reason`` is that stop
    string, or None when the text ended by itself or was cut for length.
    """
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    hit: tuple[int, str] | None = None
    for stop in stops:
        start = text.find(stop)
        if start >= 0 and (hit is None or start + len(stop) < hit[0] + len(hit[1])):
            hit = (start, stop)
    words = text.split(" ")
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    capped = " ".join(words[:limit]) if limit and len(words) > limit else None
    if hit is not None and (capped is None or hit[0] + len(hit[1]) <= len(capped)):
        return text[: hit[0]], "stop", hit[1]
    if capped is not None:
        return capped, "length", None
    return text, "stop", None
