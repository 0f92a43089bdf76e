"""An optional server-side `statement_timeout` bounded by the invocation's deadline.

When Lambda ends an invocation at its timeout, the server does not notice: a long
query keeps running, holding its locks and its transaction, until it finishes. With
this enabled, every statement inside a transaction block is preceded by
``SET LOCAL statement_timeout`` set to the time left, so the server cancels it and
rolls the transaction back on its own. ``SET LOCAL`` ends with the transaction, so it is
safe behind PgBouncer in transaction mode and RDS Proxy (no session pinning).

Limitation: a statement in autocommit mode outside ``conn.transaction()`` is its own
transaction and is not bounded (a ``SET LOCAL`` there would be a no-op); the pool's
static ``statement_timeout`` setting covers those.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq
from psycopg.rows import Row

from .. import deadline as _deadline
from ..connection import PooledCursorMixin

__all__ = [
    "DeadlineClientCursor",
    "DeadlineCursor",
    "DeadlineCursorMixin",
    "bound_statements_by_deadline",
    "use_deadline_cursors",
]

_enabled: ContextVar[bool] = ContextVar("serverless_pool_deadline_statements", default=False)
_IDLE = pq.TransactionStatus.IDLE
_INTRANS = pq.TransactionStatus.INTRANS
# Never ask the server for less than this: a 0 would mean "no timeout".
_MIN_MS = 1


@contextmanager
def bound_statements_by_deadline(enabled: bool = True) -> Iterator[None]:
    """Within the block, deadline cursors bound statements in transactions."""
    token = _enabled.set(enabled)
    try:
        yield
    finally:
        _enabled.reset(token)


class DeadlineCursorMixin:
    """Mix in front of `PooledCursorMixin` to set ``SET LOCAL statement_timeout``."""

    if TYPE_CHECKING:
        _conn: Any

    def _sp_bound(self) -> None:
        if not _enabled.get():
            return
        left = _deadline.remaining()
        if left is None:
            return
        conn = self._conn
        status = conn.pgconn.transaction_status
        # In a transaction block, or about to open one (autocommit off): SET LOCAL holds.
        if status == _INTRANS or (status == _IDLE and not conn.autocommit):
            sync = getattr(self, "_sp_sync", None)
            if sync is not None:
                sync()  # the pool's pre-first-statement liveness check comes first
            ms = max(_MIN_MS, int(left * 1000))
            # Through the plain psycopg cursor: a SET LOCAL is not session state, so it
            # must not mark the connection for a reset on return.
            psycopg.Cursor.execute(
                self,  # type: ignore[call-overload]
                f"SET LOCAL statement_timeout = {ms:d}".encode(),
            )

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._sp_bound()
        return super().execute(query, *args, **kwargs)  # type: ignore[misc]

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._sp_bound()
        return super().executemany(query, *args, **kwargs)  # type: ignore[misc]


class DeadlineCursor(DeadlineCursorMixin, PooledCursorMixin, psycopg.Cursor[Row]):
    """The pool's default cursor, bounded by the invocation's deadline when enabled."""


class DeadlineClientCursor(DeadlineCursorMixin, PooledCursorMixin, psycopg.ClientCursor[Row]):
    """The pool's client-side binding cursor, bounded by the deadline when enabled."""


def use_deadline_cursors(conn: psycopg.Connection[Any]) -> None:
    """A ``configure`` callback for `ServerlessPool`: use `DeadlineCursor` on `conn`."""
    conn.cursor_factory = DeadlineCursor
