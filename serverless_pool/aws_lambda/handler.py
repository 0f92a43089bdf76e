"""`make_handler`: a Lambda handler around a WSGI or ASGI app, with the pool's lifecycle.

Per invocation: the deadline from the Lambda context bounds every borrow (and, when
enabled, statements in transactions); every connection borrowed during the invocation
is back in its pool before the handler returns; warm-up pings are answered without the
app; optionally one CloudWatch EMF line. Per instance: optional connections in the init
phase, ASGI lifespan once, and pools closed on SIGTERM (see `serverless_pool.lifecycle`).
"""

from __future__ import annotations

import atexit
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

import psycopg

from .. import lifecycle
from ..checks import log_configuration_problems
from ..deadline import deadline_after
from ..errors import SettingsError
from ..settings import running_on_lambda
from .adapters import TEXT_TYPES, AsgiAdapter, Interface, WsgiAdapter, detect_interface
from .context import LambdaContext
from .lifespan import LifespanMode
from .metrics import counts_between, emf_line
from .statement_timeout import bound_statements_by_deadline
from .warmup import DEFAULT_MARKER, is_warmup

__all__ = ["LambdaHandler", "make_handler"]

logger = logging.getLogger("serverless_pool")

_INTERFACES: Final = ("auto", "wsgi", "asgi")
_NO_DEADLINE: Final = 15 * 60.0  # Lambda's longest timeout
_LIFESPANS: Final = ("auto", "on", "off")


class LambdaHandler:
    """The callable `make_handler` returns: ``handler(event, context) -> dict``.

    Attributes useful in tests and logs: `interface` (``"wsgi"`` or ``"asgi"``),
    `invocations` (events handled by this instance, warm-ups included) and
    `cold_start` (whether the latest invocation was the instance's first).
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
        if not isinstance(base_path, str):
            raise SettingsError(f"base_path: expected a path string, got {base_path!r}")
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
        self._started = False
        self._closed = False
        # Once per instance: log what the check commands would find in the settings
        # (the integrations' own checks included), where CloudWatch keeps it.
        log_configuration_problems()
        if running_on_lambda():
            _watch_instance_end(self)
        if connect_on_init:
            # Lambda's init phase runs at full CPU and is not billed on most runtimes:
            # the connection (and ASGI startup) is paid for before the first request.
            self._start()
            _warm_all()

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        self.invocations += 1
        self.cold_start = self.invocations == 1
        if self.cold_start:
            logger.info("cold start: first invocation of this instance")
        if is_warmup(event, self.warmup_marker):
            return self._warmup()
        self._start()
        before = {id(pool): pool.stats() for pool in lifecycle.live_pools()} if self.metrics else {}
        leaked = 0
        left = self._time_left(context)
        try:
            with deadline_after(left):
                if self.statement_timeout:
                    with bound_statements_by_deadline():
                        return self.adapter(event, context)
                return self.adapter(event, context)
        finally:
            leaked = _reclaim_loans(getattr(context, "aws_request_id", ""))
            if self.metrics:
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

    def _time_left(self, context: LambdaContext) -> float:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:  # called by hand without a real context: no deadline
            return _NO_DEADLINE
        millis: int = remaining()
        return max(0.0, millis / 1000.0 - self.deadline_margin)

    def _warmup(self) -> dict[str, Any]:
        opened = 0
        if self.warmup_connect:
            self._start()
            opened = _warm_all()
        return {"warmup": True, "coldStart": self.cold_start, "idleConnections": opened}

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
    - ``statement_timeout``: bound statements in transactions by the deadline with
      ``SET LOCAL statement_timeout`` (default False; needs `use_deadline_cursors`).
    - ``warmup_marker``: the key that marks a warm-up payload (default
      ``"serverless-pool-warmup"``, None to disable); EventBridge scheduled events are
      always warm-ups. ``warmup_connect``: open each pool's connection on a warm-up.
    - ``connect_on_init``: open connections (and run ASGI startup) in the init phase.
    - ``metrics``: print one CloudWatch EMF line per invocation; ``metrics_namespace``.
    - ``lifespan``: ASGI lifespan ``"auto"`` (default), ``"on"`` or ``"off"``; it runs
      once per instance, never per event. ``shutdown_timeout``: bound on shutdown.
    - ``base_path``: a path prefix (API mapping, stage) removed from incoming paths.
    - ``text_content_types``: response content-type prefixes sent as text, not base64.
    """
    return LambdaHandler(app, **options)


def _reclaim_loans(request_id: str) -> int:
    """Take back connections the app left borrowed; a leak is logged, then fixed."""
    leaked = 0
    for pool in lifecycle.live_pools():
        if pool.closed:
            continue
        in_use = pool.stats()["pool_in_use"]
        if in_use:
            logger.warning(
                "pool %r: %d connection(s) still borrowed when invocation %s ended;"
                " returning them to the pool",
                pool.name, in_use, request_id or "?",
            )  # fmt: skip
            leaked += pool.reclaim()
    return leaked


def _warm_all() -> int:
    """Open each live pool's connection; a database that is down is logged, not fatal.

    Failing here would fail the init phase (or the ping) and Lambda would retry init
    over and over; the first request will try again and report a real error.
    """
    opened = 0
    for pool in lifecycle.live_pools():
        if pool.closed:
            continue
        try:
            opened += pool.warm(1)
        except psycopg.Error as err:
            logger.warning("pool %r: could not connect ahead of use: %s", pool.name, err)
    return opened


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
