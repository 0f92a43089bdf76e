"""The Lambda Runtime API and Extensions API of one emulated execution environment.

Runtime API (version ``2018-06-01``): ``GET runtime/invocation/next`` blocks until an
event is queued and answers with the ``Lambda-Runtime-*`` headers; any number of
callers may wait in it at once (Lambda Managed Instances' runtime workers), each taking
one event. ``POST runtime/invocation/{id}/response`` and ``.../error``,
``POST runtime/init/error``, and SnapStart's ``GET runtime/restore/next`` and
``POST runtime/restore/error``.

Extensions API (version ``2020-01-01``), following AWS's reference and AWS's own
runtime interface emulator: ``POST extension/register`` with the
``Lambda-Extension-Name`` header and ``{"events": [...]}`` answers with a
``Lambda-Extension-Identifier`` header; an extension whose name is not one of the
external extensions the environment launched is *internal*, and may not subscribe to
``SHUTDOWN``; at most 10 extensions; registration closes as soon as the runtime asks
for its first event. ``GET extension/event/next`` (with the identifier header) marks
the extension ready and blocks until an ``INVOKE`` or ``SHUTDOWN`` event it subscribed
to. ``POST extension/init/error`` and ``extension/exit/error`` are recorded. Errors
are ``{"errorMessage", "errorType"}`` documents with AWS's error types.

Init is complete when the runtime asked for its first event (or, with SnapStart, for
its restore) and every registered extension called ``next``. Listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from .server import LoopbackServer

__all__ = ["MAX_EXTENSIONS", "Extension", "Invocation", "RuntimeApi", "deadline_ms"]

_RUNTIME = "/2018-06-01/runtime"
_EXTENSION = "/2020-01-01/extension"
_POLL = 0.05
#: Lambda's limit on extensions per function.
MAX_EXTENSIONS = 10
_EVENT_TYPES = ("INVOKE", "SHUTDOWN")


@dataclass
class Invocation:
    """One event on its way through the runtime, and what came back."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    done: threading.Event = field(default_factory=threading.Event)
    taken: threading.Event = field(default_factory=threading.Event)
    response: bytes | None = None
    error: dict[str, Any] | None = None
    error_type: str | None = None
    #: The process that took the event (told apart on Managed Instances only).
    worker: int | None = None


@dataclass
class Extension:
    """An extension registered with the environment."""

    id: str
    name: str
    external: bool
    events: tuple[str, ...]
    #: Called ``next`` at least once: its init is done.
    ready: bool = False
    #: Received an event and has not called ``next`` again yet.
    busy: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    _queue: deque[dict[str, Any]] = field(default_factory=deque, repr=False)

    @property
    def kind(self) -> str:
        return "external" if self.external else "internal"


class _ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class RuntimeApi:
    """The API an environment's runtime and extensions talk to (``AWS_LAMBDA_RUNTIME_API``).

    :param external_names: names (file names) of the external extensions launched in
        this environment; any other name registers as an internal extension.
    :param worker_of: given a caller's port, which process made the call (Managed
        Instances: tells runtime workers apart).
    """

    def __init__(
        self,
        *,
        function_name: str = "emulated-function",
        function_version: str = "$LATEST",
        handler: str = "",
        account_id: str = "123456789012",
        external_names: Iterable[str] = (),
        worker_of: Callable[[int], int | None] | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.handler = handler
        self.account_id = account_id
        self._external_names = frozenset(external_names)
        self._worker_of = worker_of
        self._cond = threading.Condition()
        self._queue: deque[Invocation] = deque()
        self._active: dict[str, Invocation] = {}
        self._waiting = 0
        self._stopping = False
        self._extensions: dict[str, Extension] = {}
        self.registration_open = True
        #: The runtime (or one of its workers) asked for its first event or restore.
        self.runtime_ready = threading.Event()
        #: The body of a ``/init/error`` report, once one arrives.
        self.init_error: dict[str, Any] | None = None
        self.init_failed = threading.Event()
        #: SnapStart: the runtime waits in ``restore/next``; `restore()` answers it.
        self.restore_requested = threading.Event()
        self._restored = threading.Event()
        self.restore_error: dict[str, Any] | None = None
        self._server = LoopbackServer(0, _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port``, the value for ``AWS_LAMBDA_RUNTIME_API``."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> RuntimeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the environment's side ----------------------------------------------------------

    @property
    def extensions(self) -> list[Extension]:
        with self._cond:
            return list(self._extensions.values())

    def adopt_extensions(self, extensions: Iterable[Extension]) -> None:
        """SnapStart: the registrations captured in the snapshot, already done and ready."""
        with self._cond:
            for ext in extensions:
                copy = Extension(ext.id, ext.name, ext.external, ext.events, ready=True)
                self._extensions[copy.id] = copy
            self.registration_open = False

    def close_registration(self) -> None:
        with self._cond:
            self.registration_open = False

    def extensions_ready(self) -> bool:
        with self._cond:
            return all(ext.ready for ext in self._extensions.values())

    @property
    def waiting(self) -> int:
        """How many runtime callers are blocked in ``invocation/next`` right now."""
        with self._cond:
            return self._waiting

    def settled(self) -> bool:
        """Nothing in flight: no queued event, no extension working on one."""
        with self._cond:
            return not self._queue and not any(e.busy for e in self._extensions.values())

    def submit(self, invocation: Invocation) -> None:
        with self._cond:
            self._active[invocation.request_id] = invocation
            self._queue.append(invocation)
            for ext in self._extensions.values():
                if "INVOKE" in ext.events:
                    ext._queue.append(
                        {
                            "eventType": "INVOKE",
                            "deadlineMs": invocation.deadline_ms,
                            "requestId": invocation.request_id,
                            "invokedFunctionArn": invocation.function_arn,
                            "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
                        }
                    )
            self._cond.notify_all()

    def forget(self, invocation: Invocation) -> None:
        with self._cond:
            self._active.pop(invocation.request_id, None)
            if invocation in self._queue:
                self._queue.remove(invocation)

    def invocation_complete(self, invocation: Invocation) -> bool:
        """The runtime answered and every extension subscribed to INVOKE is done too."""
        if not invocation.done.is_set():
            return False
        with self._cond:
            return not any(e.busy for e in self._extensions.values())

    def send_shutdown(self, reason: str, deadline: float) -> list[Extension]:
        """Queue a SHUTDOWN event for each external extension subscribed to it."""
        event = {
            "eventType": "SHUTDOWN",
            "shutdownReason": reason,
            "deadlineMs": int(deadline * 1000),
        }
        with self._cond:
            told = [e for e in self._extensions.values() if "SHUTDOWN" in e.events]
            for ext in told:
                ext._queue.append(dict(event))
            self._cond.notify_all()
        return told

    def restore(self) -> None:
        """SnapStart: answer the pending ``restore/next``, as after a restore."""
        self._restored.set()

    # -- called from request threads ---------------------------------------------------

    def _runtime_next(self, peer_port: int) -> Invocation:
        worker = self._worker_of(peer_port) if self._worker_of is not None else None
        with self._cond:
            self._waiting += 1
            self._mark_runtime_ready()
            self._cond.notify_all()
            try:
                while True:
                    if self._stopping:
                        raise _ApiError(500, "Runtime.Stopping", "the environment is gone")
                    if self._queue:
                        invocation = self._queue.popleft()
                        invocation.worker = worker
                        invocation.taken.set()
                        return invocation
                    self._cond.wait(_POLL)
            finally:
                self._waiting -= 1

    def _restore_next(self) -> None:
        with self._cond:
            self._mark_runtime_ready()
        self.restore_requested.set()
        while not self._restored.wait(_POLL):
            if self._stopping:
                raise _ApiError(500, "Runtime.Stopping", "the environment is gone")

    def _mark_runtime_ready(self) -> None:
        # Called under the lock: the runtime's first call ends extension registration.
        self.registration_open = False
        self.runtime_ready.set()

    def _finish(self, request_id: str, kind: str, body: bytes, error_type: str | None) -> None:
        with self._cond:
            invocation = self._active.get(request_id)
            if invocation is None or invocation.done.is_set():
                raise _ApiError(400, "InvalidRequestID", "unknown or finished invocation")
            if kind == "response":
                invocation.response = body
            else:
                invocation.error = _json_or_text(body)
                invocation.error_type = error_type
            invocation.done.set()
            self._cond.notify_all()

    def _register(self, name: str, body: bytes, features: str) -> tuple[str, dict[str, Any]]:
        if not name:
            raise _ApiError(403, "Extension.InvalidExtensionName", "Empty extension name")
        try:
            request = json.loads(body or b"{}")
            events = request.get("events") or []
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise ValueError("events: expected a list of strings")
        except (ValueError, AttributeError) as err:
            raise _ApiError(403, "InvalidRequestFormat", str(err)) from None
        with self._cond:
            taken = {e.name for e in self._extensions.values()}
            external = name in self._external_names and name not in taken
            for event in events:
                if event not in _EVENT_TYPES:
                    raise _ApiError(
                        403, "Extension.InvalidEventType", f"{event}: ErrorInvalidEventType"
                    )
                if event == "SHUTDOWN" and not external:
                    raise _ApiError(
                        403,
                        "Extension.InvalidEventType",
                        "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension",
                    )
            if not self.registration_open:
                raise _ApiError(
                    403, "Extension.RegistrationClosed", "Extension registration closed already"
                )
            if name in taken:
                raise _ApiError(
                    403,
                    "Extension.InvalidExtensionState",
                    "Extension with this name already registered",
                )
            if len(self._extensions) >= MAX_EXTENSIONS:
                raise _ApiError(
                    403,
                    "Extension.TooManyExtensions",
                    f"Extension limit ({MAX_EXTENSIONS}) reached",
                )
            ext = Extension(str(uuid.uuid4()), name, external, tuple(events))
            self._extensions[ext.id] = ext
        answer: dict[str, Any] = {
            "functionName": self.function_name,
            "functionVersion": self.function_version,
            "handler": self.handler,
        }
        if "accountId" in {f.strip() for f in features.split(",")}:
            answer["accountId"] = self.account_id
        return ext.id, answer

    def _extension(self, ext_id: str | None) -> Extension:
        if not ext_id:
            raise _ApiError(
                403, "Extension.MissingExtensionIdentifier", "Missing extension identifier"
            )
        with self._cond:
            ext = self._extensions.get(ext_id)
        if ext is None:
            raise _ApiError(
                403, "Extension.UnknownExtensionIdentifier", f"Unknown extension {ext_id}"
            )
        return ext

    def _extension_next(self, ext_id: str | None) -> dict[str, Any]:
        ext = self._extension(ext_id)
        with self._cond:
            ext.ready = True
            ext.busy = False
            self._cond.notify_all()
            while True:
                if self._stopping:
                    raise _ApiError(500, "Extension.Stopping", "the environment is gone")
                if ext._queue:
                    ext.busy = True
                    return ext._queue.popleft()
                self._cond.wait(_POLL)

    def _extension_error(self, ext_id: str | None, kind: str, error_type: str, body: bytes) -> None:
        ext = self._extension(ext_id)
        with self._cond:
            ext.errors.append({"kind": kind, "errorType": error_type, **_json_or_text(body)})


def _make_handler(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle and delayed
        # ACKs add ~40 ms to each exchange.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read the instance's own output, not ours."""

        def do_GET(self) -> None:
            try:
                if self.path == f"{_RUNTIME}/invocation/next":
                    invocation = api._runtime_next(self.client_address[1])
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
                elif self.path == f"{_RUNTIME}/restore/next":
                    api._restore_next()
                    self._reply(200, b"")
                elif self.path == f"{_EXTENSION}/event/next":
                    ext_id = self.headers.get("Lambda-Extension-Identifier")
                    event = api._extension_next(ext_id)
                    self._reply(200, event, {"Lambda-Extension-Identifier": str(ext_id)})
                else:
                    raise _ApiError(404, "NotFound", f"unknown path {self.path}")
            except _ApiError as err:
                self._reply(err.status, {"errorMessage": str(err), "errorType": err.error_type})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                self._post(body)
            except _ApiError as err:
                self._reply(err.status, {"errorMessage": str(err), "errorType": err.error_type})

        def _post(self, body: bytes) -> None:
            path = self.path
            if path == f"{_RUNTIME}/init/error":
                api.init_error = _json_or_text(body)
                api.init_failed.set()
                self._reply(202, {"status": "OK"})
            elif path == f"{_RUNTIME}/restore/error":
                api.restore_error = _json_or_text(body)
                self._reply(202, {"status": "OK"})
            elif path.startswith(f"{_RUNTIME}/invocation/"):
                parts = path[len(_RUNTIME) + 1 :].split("/")
                if len(parts) != 3 or parts[2] not in ("response", "error"):
                    raise _ApiError(404, "NotFound", f"unknown path {path}")
                api._finish(
                    parts[1], parts[2], body, self.headers.get("Lambda-Runtime-Function-Error-Type")
                )
                self._reply(202, {"status": "OK"})
            elif path == f"{_EXTENSION}/register":
                new_id, answer = api._register(
                    self.headers.get("Lambda-Extension-Name") or "",
                    body,
                    self.headers.get("Lambda-Extension-Accept-Feature") or "",
                )
                self._reply(200, answer, {"Lambda-Extension-Identifier": new_id})
            elif path in (f"{_EXTENSION}/init/error", f"{_EXTENSION}/exit/error"):
                ext_error = self.headers.get("Lambda-Extension-Function-Error-Type") or ""
                if not ext_error:
                    raise _ApiError(
                        403,
                        "Extension.MissingHeader",
                        "Missing Lambda-Extension-Function-Error-Type header",
                    )
                ext_id = self.headers.get("Lambda-Extension-Identifier")
                api._extension_error(ext_id, path.rsplit("/", 2)[1], ext_error, body)
                self._reply(202, {"status": "OK"})
            else:
                raise _ApiError(404, "NotFound", f"unknown path {path}")

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
