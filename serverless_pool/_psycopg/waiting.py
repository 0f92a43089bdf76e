"""The connection's wait for the server, bounded by the deadline of the work in progress.

Why and how long: see `serverless_pool.silent_server`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
from psycopg import pq

from ..errors import DeadlineExceeded

if TYPE_CHECKING:
    from psycopg.abc import PQGen

    from .connection import PooledConnection

__all__ = ["CANCEL_TIMEOUT", "GRACE", "deadline_wait"]

logger = logging.getLogger("serverless_pool")

RV = TypeVar("RV")

#: Seconds after the deadline before the client gives up on a silent server.
GRACE: Final = 0.05
#: Seconds the cancel request for the abandoned statement may take.
CANCEL_TIMEOUT: Final = 0.2
_BASE_WAIT: Any = psycopg.Connection.wait
# libpq's cancel takes a timeout from version 17 on; an older one could block.
_CANCEL_HAS_TIMEOUT: Final = pq.version() >= 170000
# psycopg 3.3.9 and later bound a wait themselves (the timeout argument); before, the
# generator is watched at each tick of silence instead.
_NATIVE_TIMEOUT: Final = "timeout" in inspect.signature(_BASE_WAIT).parameters
_WaitTimeout: Any = getattr(psycopg.errors, "_WaitTimeout", None) or type(
    "_NeverRaised", (Exception,), {}
)
_FALLBACK_TICK: Final = 0.05


def deadline_wait(
    self: PooledConnection[Any], gen: PQGen[Any], interval: float, until: float
) -> Any:
    """`PooledConnection.wait` while a deadline (`until`) is active in this context.

    psycopg runs every exchange with the server (a statement, a fetch, a COMMIT...)
    through ``wait()``. Past the deadline (plus `GRACE`) it gives up.
    """
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
