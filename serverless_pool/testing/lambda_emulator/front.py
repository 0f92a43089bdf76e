"""A small HTTP front standing in for API Gateway: plain HTTP in, HTTP API v2 events out.

``curl http://127.0.0.1:9000/path`` reaches the function as it would behind an HTTP API
with the ``$default`` stage. Listens on the loopback interface only.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from .events import http_api_event, http_response
from .function import EmulatedFunction
from .server import LoopbackServer

__all__ = ["HttpFront"]


class HttpFront:
    """Serves `function` over HTTP on ``127.0.0.1:port`` (0 picks a free port)."""

    def __init__(self, function: EmulatedFunction, port: int = 0) -> None:
        self.function = function
        self._server = LoopbackServer(port, _make_handler(function))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HttpFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(function: EmulatedFunction) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle and delayed
        # ACKs add ~40 ms to each exchange.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            event = http_api_event(
                self.command,
                self.path,
                list(self.headers.items()),
                body,
                source_ip=self.client_address[0],
            )
            result = function.invoke(event)
            if result.ok:
                response = http_response(result.payload)
                status, headers, data = response.status, response.headers, response.body
            else:
                # What API Gateway answers when the integration fails or times out.
                status = 504 if result.status == "timeout" else 500
                message = "Service Unavailable" if status == 504 else "Internal Server Error"
                headers = [("Content-Type", "application/json")]
                data = json.dumps({"message": message}).encode()
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return Handler
