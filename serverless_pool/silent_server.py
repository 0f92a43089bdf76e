"""Bounded waits on a server that stops answering.

A server can go silent mid-statement: a network partition, a failover, a proxy that
stopped forwarding, a frozen process. Nothing closes the connection, and TCP's defaults
keep a client waiting for many minutes, so a request would hang until Lambda kills it.
Two bounds, each for what the other cannot see:

- In the kernel, at connect time (`tcp_params`): ``tcp_user_timeout`` and keepalives,
  from the ``tcp_timeout`` setting, end a connection whose server stops acknowledging
  packets. They cannot fire while the server's machine still acknowledges (a stopped
  server process, a relay that stops forwarding but keeps its sockets open).
- In the client, while a deadline is active (`serverless_pool.deadline`, set by
  ``make_handler`` for every invocation): a wait for the server that runs past the
  deadline gives up. The statement is cancelled on the server where that can be done
  quickly, the connection is closed so it is never reused, and `DeadlineExceeded` is
  raised. Without a deadline nothing changes: psycopg waits as it always does.

The client bound fires `GRACE` after the deadline (so that a server-side
``statement_timeout`` set to the same deadline reports first), noticed within one
`TICK` of silence, and the cancel request may take up to `CANCEL_TIMEOUT`: the error
comes at most about 0.25 s after the deadline, inside ``make_handler``'s default
``deadline_margin`` of 0.5 s.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
from psycopg import pq

from .connection import _BASE_WAIT, _WAIT_INTERVAL, PooledConnection, settling_wait
from .deadline import current_deadline, on_first_deadline
from .errors import DeadlineExceeded

if TYPE_CHECKING:
    from psycopg.abc import PQGen

    from .settings import PoolSettings

__all__ = ["CANCEL_TIMEOUT", "GRACE", "deadline_wait", "tcp_params"]

logger = logging.getLogger("serverless_pool")

RV = TypeVar("RV")

#: Seconds after the deadline before the client gives up on a silent server.
GRACE: Final = 0.05
#: Seconds the cancel request for the abandoned statement may take.
CANCEL_TIMEOUT: Final = 0.2
# libpq's cancel takes a timeout from version 17 on; an older one could block.
_CANCEL_HAS_TIMEOUT: Final = pq.version() >= 170000
# psycopg 3.3.9 and later bound a wait themselves (the timeout argument); before, the
# generator is watched at each tick of silence instead.
_NATIVE_TIMEOUT: Final = "timeout" in inspect.signature(_BASE_WAIT).parameters
_WaitTimeout: Any = getattr(psycopg.errors, "_WaitTimeout", None) or type(
    "_NeverRaised", (Exception,), {}
)
_FALLBACK_TICK: Final = 0.05


def tcp_params(settings: PoolSettings, params: Mapping[str, object]) -> dict[str, object]:
    """libpq keepalive and ``tcp_user_timeout`` parameters from the ``tcp_timeout`` setting.

    Parameters the connection string sets are left alone. Keepalive probes start after
    half the timeout of idleness and continue until the timeout is spent, so a dead peer
    is noticed within about `tcp_timeout` seconds whether data was in flight or not.
    """
    seconds = settings.tcp_timeout
    if not seconds:
        return {}
    idle = max(1, math.ceil(seconds / 2))
    interval = max(1, math.ceil(seconds / 10))
    wanted: dict[str, object] = {
        "tcp_user_timeout": max(1, round(seconds * 1000)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": max(1, math.ceil(max(0.0, seconds - idle) / interval)),
    }
    return {key: value for key, value in wanted.items() if params.get(key) in (None, "")}


def deadline_wait(
    self: PooledConnection[Any],
    gen: PQGen[Any],
    interval: float = _WAIT_INTERVAL,
    timeout: float | None = None,
) -> Any:
    """`PooledConnection.wait` while a deadline is active in the process.

    psycopg runs every exchange with the server (a statement, a fetch, a COMMIT...)
    through ``wait()``. Past this context's deadline (plus `GRACE`) it gives up.
    """
    until = current_deadline()
    if until is None or timeout is not None:  # no deadline here, or psycopg's own bound
        return settling_wait(self, gen, interval, timeout)
    if self._sp_fresh < 0:  # lent before its reset's answer: as `settling_wait` does
        self._sp_settle(replace=False)
    if _NATIVE_TIMEOUT:
        try:
            return _BASE_WAIT(self, gen, interval, max(0.0, until + GRACE - time.monotonic()))
        except _WaitTimeout:
            pass
    else:
        try:
            return _BASE_WAIT(self, _until(gen, until + GRACE), _FALLBACK_TICK)
        except _Silent:
            pass
    # Thrown into `gen`, so that the layers inside it (the watch on a COMMIT) see it.
    error = _abandon(self, until)
    with contextlib.suppress(StopIteration):
        gen.throw(error)
    gen.close()
    raise error


class _Silent(Exception):
    """The server stayed silent past the deadline (psycopg before 3.3.9)."""


def _until(gen: PQGen[RV], until: float) -> Generator[Any, Any, RV]:
    """`gen` for psycopg before 3.3.9, whose wait takes no timeout: psycopg sends "nothing
    ready" after each tick of silence, when the clock is read."""
    state = next(gen)
    while True:
        ready = yield state
        if not ready and time.monotonic() > until:
            raise _Silent
        try:
            state = gen.send(ready)
        except StopIteration as stop:
            result: RV = stop.value
            return result


def _abandon(conn: PooledConnection[Any], until: float) -> DeadlineExceeded:
    """Cancel the statement (briefly), close the connection, and say so."""
    late = time.monotonic() - until
    if _CANCEL_HAS_TIMEOUT:
        # The server may only be slow: a cancel stops the statement and frees its locks.
        with contextlib.suppress(Exception):
            conn.cancel_safe(timeout=CANCEL_TIMEOUT)
    with contextlib.suppress(Exception):
        conn.close()
    entry = conn._sp_entry
    name = entry.owner.name if entry is not None else "?"
    logger.warning("pool %r: no answer from the server by the deadline; connection closed", name)
    return DeadlineExceeded(
        f"the pool {name!r}: the server did not answer before the deadline of the"
        f" invocation (given up {late:.2f} s after it); the statement was cancelled where"
        " possible and the connection closed (the statement may have run)"
    )


def _install() -> None:
    # Before the process's first deadline, psycopg's own wait is called directly: not
    # even one more function call per statement. Afterwards the bound wait stays (on
    # Lambda every invocation has a deadline): changing a class at every invocation would
    # cost the interpreter its specialized code for every attribute of the connection.
    PooledConnection.wait = deadline_wait  # type: ignore[method-assign,assignment]


on_first_deadline(_install)
