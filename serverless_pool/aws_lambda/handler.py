"""`make_handler`: a Lambda handler around a WSGI or ASGI app, with the pool's lifecycle.

Per invocation: the event's kind is recognised first (HTTP sources go to the app,
warm-up pings and allowed management commands are answered without it, anything else
gets a clear `UnsupportedEvent`); the deadline from the Lambda context bounds every
borrow (and, when enabled, every statement, on the server); every connection borrowed
during the invocation is back in its pool before the handler returns; optionally one
CloudWatch EMF line. Per instance: a no-op internal extension registered in the init
phase so that Lambda sends SIGTERM at shutdown, optional connections in the init phase,
ASGI lifespan once, and pools closed on SIGTERM (see `serverless_pool.lifecycle`).
"""

from __future__ import annotations

import atexit
import binascii
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final, TextIO

from .. import lifecycle
from ..checks import log_configuration_problems
from ..deadline import start_deadline
from ..errors import SettingsError
from ..settings import running_on_lambda
from ..statement_deadline import bound_statements_by_deadline
from .adapters import TEXT_TYPES, AsgiAdapter, Interface, WsgiAdapter, detect_interface
from .commands import COMMAND_KEY, CommandRunner, command_of
from .context import LambdaContext
from .events import check_body, classify
from .extension import register_extension as _register_extension
from .lifespan import LifespanMode
from .metrics import counts_between, emf_line
from .warmup import DEFAULT_MARKER, connect_ahead, idle_connections, is_warmup

__all__ = ["LambdaHandler", "make_handler"]

logger = logging.getLogger("serverless_pool")

_INTERFACES: Final = ("auto", "wsgi", "asgi")
_SCHEDULE: Final = "aws.events"  # the source of EventBridge's scheduled warm-up events
_LIFESPANS: Final = ("auto", "on", "off")


class LambdaHandler:
    """The callable `make_handler` returns: ``handler(event, context) -> dict``.

    Attributes useful in tests and logs: `interface` (``"wsgi"`` or ``"asgi"``),
    `invocations` (events handled by this instance, warm-ups included), `cold_start`
    (whether the latest invocation was the instance's first) and `leaked` (connections
    the latest invocation left borrowed, taken back by the handler).
    """

    def __init__(
        self,
        app: Any,
        *,
        interface: Interface = "auto",
        deadline_margin: float = 0.5,
        statement_timeout: bool = False,
        warmup_marker: str | None = DEFAULT_MARKER,
        warmup_connect: bool = False,
        connect_on_init: bool = False,
        metrics: bool = False,
        metrics_namespace: str = "ServerlessPool",
        metrics_stream: TextIO | None = None,
        lifespan: LifespanMode = "auto",
        shutdown_timeout: float = 0.2,
        base_path: str = "/",
        text_content_types: Sequence[str] = TEXT_TYPES,
        register_extension: bool = True,
        commands: Sequence[str] | None = None,
    ) -> None:
        if interface not in _INTERFACES:
            raise SettingsError(
                f"interface: expected one of {', '.join(_INTERFACES)}, got {interface!r}"
            )
        if lifespan not in _LIFESPANS:
            raise SettingsError(
                f"lifespan: expected one of {', '.join(_LIFESPANS)}, got {lifespan!r}"
            )
        for name, value in (
            ("deadline_margin", deadline_margin),
            ("shutdown_timeout", shutdown_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SettingsError(f"{name}: expected seconds >= 0, got {value!r}")
        if not isinstance(statement_timeout, bool):
            raise SettingsError(
                "statement_timeout: expected True (bound every statement by the"
                f" invocation's deadline, on the server) or False, got {statement_timeout!r}"
            )
        if not isinstance(base_path, str):
            raise SettingsError(f"base_path: expected a path string, got {base_path!r}")
        self.commands = CommandRunner(commands)
        self.interface = detect_interface(app) if interface == "auto" else interface
        self.adapter: WsgiAdapter | AsgiAdapter
        if self.interface == "asgi":
            self.adapter = AsgiAdapter(
                app, base_path=base_path, text_types=text_content_types, lifespan=lifespan
            )
        else:
            self.adapter = WsgiAdapter(app, base_path=base_path, text_types=text_content_types)
        self.deadline_margin = float(deadline_margin)
        self.statement_timeout = statement_timeout
        self.warmup_marker = warmup_marker
        self.warmup_connect = warmup_connect
        self.metrics = metrics
        self.metrics_namespace = metrics_namespace
        self._metrics_stream = metrics_stream
        self.shutdown_timeout = float(shutdown_timeout)
        self.invocations = 0
        self.cold_start = True
        #: Connections the latest invocation left borrowed (taken back, and logged).
        self.leaked = 0
        self._started = False
        self._closed = False
        self.app = app
        # Once per instance: log what the check commands would find in the settings
        # (the integrations' own checks included), where CloudWatch keeps it.
        log_configuration_problems()
        if running_on_lambda():
            _watch_instance_end(self)
            if register_extension:
                # Without a registered extension Lambda sends no SIGTERM at all.
                _register_extension()
        if connect_on_init:
            # Lambda's init phase runs at full CPU and is not billed on most runtimes:
            # the connection (and ASGI startup) is paid for before the first request.
            self._start()
            connect_ahead()

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        # Written out, for the cost of every invocation: each function call saved here
        # is worth several checks (see bench/instructions.py).
        self.invocations += 1
        self.cold_start = cold = self.invocations == 1
        if cold:
            logger.info("cold start: first invocation of this instance")
        if type(event) is dict:
            marker = self.warmup_marker
            maybe_warmup = (marker is not None and event.get(marker)) or event.get(
                "source"
            ) == _SCHEDULE
            if maybe_warmup and is_warmup(event, marker):
                return self._warmup()
            # A direct invocation with a command, else an HTTP event.
            command = event.get(COMMAND_KEY)
        else:
            if is_warmup(event, self.warmup_marker):
                return self._warmup()
            command = command_of(event)
        if command is None:
            classify(event)  # UnsupportedEvent before any adapter sees it
            if "httpMethod" in event and "multiValueHeaders" not in event:
                event = _with_multi_value_headers(event)
        if not self._started:
            self._start()
        metrics = self.metrics
        before = {id(pool): pool.stats() for pool in lifecycle.live_pools()} if metrics else None
        # The invocation's deadline (see `_time_left`), for every borrow and wait.
        deadline = None
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is not None:
            left = self._time_left(remaining())
            if left is not None:
                deadline = start_deadline(left)
        try:
            if command is not None:
                return self.commands.run(self.app, command)
            if self.statement_timeout:
                with bound_statements_by_deadline():
                    return self.adapter(event, context)
            return self.adapter(event, context)
        except binascii.Error:
            check_body(event)  # a body that is not base64: UnsupportedEvent says so
            raise
        finally:
            if deadline is not None:
                deadline.var.reset(deadline)
            on_loan = lifecycle.pools_on_loan()
            self.leaked = leaked = _reclaim_loans(on_loan, context) if on_loan else 0
            if before is not None:
                self._emit_metrics(context, before, leaked)

    def close(self) -> None:
        """End of the instance: ASGI lifespan shutdown (pools close on their own hooks)."""
        if self._closed:
            return
        self._closed = True
        self.adapter.stop(self.shutdown_timeout)

    # -- internals -------------------------------------------------------------------

    def _start(self) -> None:
        if not self._started:
            self.adapter.start()
            self._started = True

    def _time_left(self, millis: float) -> float | None:
        """Seconds the invocation's borrows may take, or None for no invocation deadline.

        `millis` is what the context's ``get_remaining_time_in_millis()`` reports at the
        start of the invocation. A non-positive remaining time is no deadline at all:
        Lambda Managed Instances report zero (or less) once an invocation's time is up,
        and local tools that do not set a deadline report the same; taken at its word, it
        would make every borrow an instant `PoolTimeout`. Borrows are then bounded by
        ``acquire_timeout`` alone. The margin never takes more than half of what is left,
        so a short timeout still leaves time to connect.
        """
        if type(millis) is not int and not isinstance(millis, int | float):
            millis = 0  # not a number: no deadline either
        if millis <= 0:
            _note_no_deadline(millis)
            return None
        seconds = millis / 1000.0
        left = seconds - self.deadline_margin
        half = seconds / 2
        return left if left > half else half

    def _warmup(self) -> dict[str, Any]:
        if self.warmup_connect:
            self._start()
            connect_ahead()
        return {"warmup": True, "coldStart": self.cold_start, "idleConnections": idle_connections()}

    def _emit_metrics(
        self, context: LambdaContext, before: dict[int, dict[str, int]], leaked: int
    ) -> None:
        totals: dict[str, int] = {}
        names = []
        for pool in lifecycle.live_pools():
            names.append(pool.name)
            counts = counts_between(before.get(id(pool), {}), pool.stats())
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        totals["LeakedConnections"] = leaked
        totals["ColdStart"] = int(self.cold_start)
        function = getattr(context, "function_name", "") or os.environ.get(
            "AWS_LAMBDA_FUNCTION_NAME", ""
        )
        line = emf_line(
            self.metrics_namespace,
            function,
            totals,
            pools=sorted(names),
            request_id=getattr(context, "aws_request_id", ""),
        )
        stream = self._metrics_stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


def make_handler(app: Any, **options: Any) -> LambdaHandler:
    """A Lambda handler ``(event, context)`` for a WSGI or an ASGI app.

    ``handler = make_handler(app)`` in the module named by the function's handler
    setting. Events from API Gateway REST (v1), HTTP API (payload 1.0 and 2.0),
    Function URLs and ALB (with or without multi-value headers) are mapped by apig-wsgi
    for WSGI apps and by Mangum for ASGI apps.

    Options (all keyword-only):

    - ``interface``: ``"auto"`` (default: ASGI if the app is a coroutine function or has
      an async ``__call__``), ``"wsgi"`` or ``"asgi"``.
    - ``deadline_margin``: seconds kept back from the invocation's remaining time when
      bounding borrows (default 0.5), so an error can still be returned.
    - ``statement_timeout``: every statement of the app (Django's included) carries the
      invocation's remaining time to the server as its ``statement_timeout``, at no
      extra round trip (default False; see
      `serverless_pool.bound_statements_by_deadline`).
    - ``warmup_marker``: the key that marks a warm-up payload (default
      ``"serverless-pool-warmup"``, None to disable); EventBridge scheduled events are
      always warm-ups. ``warmup_connect``: open each pool's connection on a warm-up.
    - ``connect_on_init``: open connections (and run ASGI startup) in the init phase.
    - ``metrics``: print one CloudWatch EMF line per invocation; ``metrics_namespace``.
    - ``lifespan``: ASGI lifespan ``"auto"`` (default), ``"on"`` or ``"off"``; it runs
      once per instance, never per event. ``shutdown_timeout``: bound on shutdown.
    - ``base_path``: a path prefix (API mapping, stage) removed from incoming paths.
    - ``text_content_types``: response content-type prefixes sent as text, not base64.
    - ``register_extension``: register a no-op internal extension in the init phase so
      that Lambda sends SIGTERM at shutdown and the pools close (default True).
    - ``commands``: management commands a direct invocation may run
      (``{"serverless-pool-command": ["migrate", "--noinput"]}``); none by default.

    Any other event (an SQS batch, a WebSocket message, an authorizer call, ``None``...)
    raises `serverless_pool.errors.UnsupportedEvent` naming what it is.
    """
    return LambdaHandler(app, **options)


def _reclaim_loans(on_loan: list[tuple[Any, int]], context: LambdaContext) -> int:
    """Take back connections the app left borrowed; a leak is logged, then fixed."""
    leaked = 0
    for pool, in_use in on_loan:
        logger.warning(
            "pool %r: %d connection(s) still borrowed when invocation %s ended;"
            " returning them to the pool",
            pool.name, in_use, getattr(context, "aws_request_id", "") or "?",
        )  # fmt: skip
        leaked += pool.reclaim()
    return leaked


_no_deadline_noted = False


def _note_no_deadline(millis: object) -> None:
    global _no_deadline_noted
    if not _no_deadline_noted:
        _no_deadline_noted = True
        logger.info(
            "the runtime reports %r ms left at the start of an invocation: no invocation"
            " deadline, borrows are bounded by acquire_timeout",
            millis,
        )


def _with_multi_value_headers(event: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway 1.0 event without ``multiValueHeaders``, given them.

    apig-wsgi answers in the format of the request: without ``multiValueHeaders`` it
    returns a plain ``headers`` mapping, where every ``Set-Cookie`` but the last is
    lost. API Gateway always accepts ``multiValueHeaders`` in a 1.0 response; an ALB
    without multi-value headers does not, so ALB events are left alone.
    """
    if "multiValueHeaders" in event or "httpMethod" not in event:
        return event
    context = event.get("requestContext")
    if isinstance(context, dict) and "elb" in context:
        return event
    headers = event.get("headers") or {}
    return {**event, "multiValueHeaders": {k: [v] for k, v in headers.items()}}


# -- instance end --------------------------------------------------------------------

_handlers: weakref.WeakSet[LambdaHandler] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False


def _watch_instance_end(handler: LambdaHandler) -> None:
    """On Lambda: ASGI shutdown at exit and on SIGTERM, before the pools close."""
    global _hooks_installed
    _handlers.add(handler)
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_close_handlers)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _chain_sigterm(previous))


def _close_handlers() -> None:
    for handler in list(_handlers):
        try:
            handler.close()
        except Exception:
            logger.exception("closing the Lambda handler at shutdown failed")


def _chain_sigterm(previous: lifecycle.Handler) -> Callable[[int, FrameType | None], None]:
    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        started = time.monotonic()
        _close_handlers()
        lifecycle.close_all()
        logger.info("SIGTERM: closed in %.1f ms", (time.monotonic() - started) * 1000)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    return on_sigterm
