"""Stand-ins on loopback for the driver scenarios: an inference provider, and a proxy that
answers as the inngest-py suite's does. Both are built on Python's ``http.server``, so both
answer HTTP/1.0 with bodies ended by closing the connection."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import httpx

PROVIDER_ANSWER = {"id": "msg_01", "type": "message", "role": "assistant",
                   "content": [{"type": "text", "text": "Hi there!"}],
                   "usage": {"input_tokens": 9, "output_tokens": 11}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded"}}


class _Loopback:
    """An ``http.server`` on a loopback port, serving from a thread until closed."""

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class Provider(_Loopback):
    """An inference provider on loopback. ``/v1`` answers; ``/flaky/v1`` fails its first
    request; ``/down/v1`` always fails. It keeps every request it got."""

    def __init__(self) -> None:
        provider = self
        self.requests: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):  # HTTP/1.0, as http.server answers
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                provider.requests.append({"path": self.path, "body": json.loads(body),
                                          "names": list(self.headers.keys()),
                                          "headers": {k.lower(): v for k, v in
                                                      self.headers.items()}})
                seen = sum(r["path"] == self.path for r in provider.requests)
                if self.path.startswith("/down/") or (self.path.startswith("/flaky/")
                                                      and seen == 1):
                    status, answer = 503, OVERLOADED
                else:
                    status, answer = 200, PROVIDER_ANSWER
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(answer).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.url = self._serve(Handler)


class Http10Proxy(_Loopback):
    """A proxy in front of an app, built as the inngest-py suite's (``test_core.http_proxy``):
    it reads the app's whole answer, then answers HTTP/1.0 with the app's headers as they were
    — ``Transfer-Encoding: chunked`` among them for a streamed answer — and the body unchunked,
    ended by closing the connection."""

    def __init__(self, upstream: str) -> None:
        proxy = self
        self.answers: list[tuple[int, dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size) if size else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["host"] = self.headers["host"]
                with httpx.stream(self.command, upstream + self.path, content=body,
                                  headers=headers, timeout=60) as reply:
                    content = b"".join(reply.iter_raw())
                    kept = dict(reply.headers.items())
                if self.command == "POST":
                    proxy.answers.append((reply.status_code, kept))
                self.send_response(reply.status_code)
                for key, value in kept.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_PUT = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.url = self._serve(Handler) + "/api/inngest"
