"""The threaded HTTP server both the Runtime API and the HTTP front run on."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackServer"]


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that takes peers vanishing in its stride.

    Killing an instance mid-request is part of the emulator's job, so a reset or broken
    connection is expected, not an error worth a traceback.
    """

    daemon_threads = True

    def __init__(self, port: int, handler: Any) -> None:
        super().__init__(("127.0.0.1", port), handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
