"""The Lambda Runtime API, served with the standard library for one emulated instance.

Endpoints (version ``2018-06-01``): ``GET runtime/invocation/next`` (blocks until an
event is queued, then answers with the ``Lambda-Runtime-*`` headers),
``POST runtime/invocation/{id}/response``, ``POST runtime/invocation/{id}/error``,
``POST runtime/init/error``, and SnapStart's ``GET runtime/restore/next`` and
``POST runtime/restore/error``. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from .server import LoopbackServer

__all__ = ["Invocation", "RuntimeApi"]

_PREFIX = "/2018-06-01/runtime"
_POLL = 0.05


@dataclass
class Invocation:
    """One event on its way through the runtime, and what came back."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    done: threading.Event = field(default_factory=threading.Event)
    response: bytes | None = None
    error: dict[str, Any] | None = None
    error_type: str | None = None


class RuntimeApi:
    """A Runtime API endpoint; `awslambdaric` talks to it via ``AWS_LAMBDA_RUNTIME_API``."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Invocation] = queue.Queue()
        self._active: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: Set while the runtime is blocked in ``next`` (the instance is idle).
        self.waiting = threading.Event()
        #: The body of a ``/init/error`` report, once one arrives.
        self.init_error: dict[str, Any] | None = None
        self.init_failed = threading.Event()
        # Bumped for each new process: a `next` still pending from a killed process
        # must neither take an event nor report the new process as waiting.
        self._generation = 0
        #: SnapStart: set when the runtime, its init done, waits to be restored (the
        #: moment Lambda takes the snapshot); `restore()` lets it go on.
        self.snapshot_ready = threading.Event()
        self._restored = threading.Event()
        self._server = LoopbackServer(0, _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def address(self) -> str:
        """``host:port``, the value for ``AWS_LAMBDA_RUNTIME_API``."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def submit(self, invocation: Invocation) -> None:
        with self._lock:
            self._active[invocation.request_id] = invocation
        self._queue.put(invocation)

    def forget(self, invocation: Invocation) -> None:
        with self._lock:
            self._active.pop(invocation.request_id, None)

    def restore(self) -> None:
        """SnapStart: answer the pending ``restore/next``, as after a restore."""
        self._restored.set()

    def reset(self) -> None:
        """A new process (re-init): forget the state of the last one."""
        with self._lock:
            self._generation += 1
        self.waiting.clear()
        self.snapshot_ready.clear()
        self._restored.clear()
        self.init_error = None
        self.init_failed.clear()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    # -- called from request threads ---------------------------------------------------

    def _next(self) -> Invocation | None:
        generation = self._generation
        self.waiting.set()
        try:
            while not self._stopping.is_set() and generation == self._generation:
                try:
                    invocation = self._queue.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if generation != self._generation:
                    self._queue.put(invocation)
                    return None
                return invocation
            return None
        finally:
            if generation == self._generation:
                self.waiting.clear()

    def _restore_next(self) -> bool:
        self.snapshot_ready.set()
        while not self._stopping.is_set():
            if self._restored.wait(_POLL):
                return True
        return False

    def _find(self, request_id: str) -> Invocation | None:
        with self._lock:
            return self._active.get(request_id)


def _make_handler(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle and delayed
        # ACKs add ~40 ms to each exchange.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read the instance's own output, not ours."""

        def do_GET(self) -> None:
            if self.path == f"{_PREFIX}/invocation/next":
                invocation = api._next()
                if invocation is None:
                    self._reply(503, {"errorMessage": "runtime API shutting down"})
                    return
                self._reply(
                    200,
                    invocation.payload,
                    {
                        "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                        "Lambda-Runtime-Trace-Id": invocation.trace_id,
                    },
                )
            elif self.path == f"{_PREFIX}/restore/next":
                if api._restore_next():
                    self._reply(200, b"")
                else:
                    self._reply(503, {"errorMessage": "runtime API shutting down"})
            else:
                self._reply(404, {"errorMessage": f"unknown path {self.path}"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path[len(_PREFIX) + 1 :].split("/")
            if self.path.startswith(_PREFIX) and parts[:2] == ["init", "error"]:
                api.init_error = _json_or_text(body)
                api.init_failed.set()
                self._reply(202, {"status": "OK"})
            elif self.path.startswith(_PREFIX) and parts[:2] == ["restore", "error"]:
                self._reply(202, {"status": "OK"})
            elif (
                self.path.startswith(_PREFIX)
                and len(parts) == 3
                and parts[0] == "invocation"
                and parts[2] in ("response", "error")
            ):
                invocation = api._find(parts[1])
                if invocation is None or invocation.done.is_set():
                    self._reply(400, {"errorMessage": "unknown or finished invocation"})
                    return
                if parts[2] == "response":
                    invocation.response = body
                else:
                    invocation.error = _json_or_text(body)
                    invocation.error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                invocation.done.set()
                self._reply(202, {"status": "OK"})
            else:
                self._reply(404, {"errorMessage": f"unknown path {self.path}"})

        def _reply(
            self, status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                # The process was killed while it waited (a timeout, a re-init).
                self.close_connection = True

    return Handler


def _json_or_text(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {"errorMessage": body.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"errorMessage": str(value)}


def deadline_ms(timeout: float) -> int:
    """Epoch milliseconds `timeout` seconds from now (the deadline header's clock)."""
    return int((time.time() + timeout) * 1000)
