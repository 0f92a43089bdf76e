"""The cursor classes the pool's connections make: psycopg's, with the pool's hooks.

A statement runs exactly as psycopg runs it. The borrow's first one goes through
`first_operation.run`; a statement to be bounded by the deadline
(`serverless_pool.statement_deadline`) through `bounded`; a statement that found the
server read-only (a failover) tells `serverless_pool.failover`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg import pq
from psycopg.rows import Row

from .. import failover
from . import bounded, first_operation

if TYPE_CHECKING:
    from psycopg._queries import PostgresQuery
    from psycopg.abc import PQGen

__all__ = [
    "PooledClientCursor",
    "PooledCursor",
    "PooledCursorMixin",
    "PooledRawCursor",
    "PooledServerCursor",
]

_CURSOR_EXECUTE: Any = psycopg.Cursor.execute
# psycopg's own: the pool's cursor classes put `PooledCursorMixin` in front of psycopg's
# cursors, none of which overrides it.
_BASE_PREPARE_GEN: Any = psycopg.Cursor._maybe_prepare_gen
_READ_ONLY_SERVER = b"25006"
_ONE_SEND: Final = first_operation.ONE_SEND
_RECHECK_AFTER: Final = first_operation.RECHECK_AFTER
_run_first: Final = first_operation.run
_IDLE: Final = pq.TransactionStatus.IDLE


class PooledCursorMixin:
    """Hooks the pool needs in a cursor; mix it in front of any psycopg cursor class."""

    __slots__ = ()

    if TYPE_CHECKING:
        _pgconn: pq.abc.PGconn
        _conn: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The hot path: when the execute() after this mixin is psycopg's own (Cursor,
        # ClientCursor, Django's cursors) and nothing in front overrides it, statements
        # go through `_sp_direct_execute`, which calls psycopg's directly with its
        # arguments spelled out: forwarding *args/**kwargs through super() costs more
        # than the rest of the hook. Chosen once, when the class is made.
        mro = cls.__mro__
        after = mro[mro.index(PooledCursorMixin) + 1 :]
        following = next((k.__dict__["execute"] for k in after if "execute" in k.__dict__), None)
        if following is _CURSOR_EXECUTE and cls.execute is PooledCursorMixin.execute:
            cls.execute = PooledCursorMixin._sp_direct_execute  # type: ignore[method-assign]

    def _sp_direct_execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Any:
        """psycopg's `Cursor.execute`, the borrow's first statement retried if it never ran."""
        conn = self._conn
        checked_at = conn._sp_fresh
        if checked_at:
            pgconn = conn.pgconn
            if not (
                # The common first operation, `first_operation.run` written out (it runs
                # once per request): an autocommit statement outside a pipeline, on a
                # session checked just now (libpq's transaction status is UNKNOWN, not
                # IDLE, on a broken connection).
                conn._autocommit
                and pgconn.transaction_status == _IDLE
                and conn._pipeline is None
                and conn._sp_replace is not None
                and _monotonic() - checked_at <= _RECHECK_AFTER
            ):
                return _run_first_execute(self, query, params, prepare, binary)
            conn._sp_fresh = 0.0
            self._pgconn = pgconn  # type: ignore[misc]
            try:
                return _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)
            except psycopg.OperationalError as err:
                first_operation.failed(conn, err, _ONE_SEND)
            self._pgconn = conn.pgconn  # type: ignore[misc]
            return _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)
        if self._pgconn is not conn.pgconn:  # a cursor kept across a swapped session
            self._pgconn = conn.pgconn  # type: ignore[misc]
        return _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        run = super().execute  # type: ignore[misc]
        return self._sp_run(lambda: run(query, *args, **kwargs), _ONE_SEND)

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        run = super().executemany  # type: ignore[misc]
        return self._sp_run(lambda: run(query, *args, **kwargs), first_operation.SEVERAL_SENDS)

    def _sp_run(self, operation: Callable[[], Any], kind: int) -> Any:
        conn = self._conn
        if conn._sp_fresh:
            return _run_first(conn, operation, kind, self)
        if self._pgconn is not conn.pgconn:
            self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        return operation()

    def _maybe_prepare_gen(
        self, pgq: PostgresQuery, *, prepare: bool | None = None, binary: bool | None = None
    ) -> PQGen[None]:
        if bounded.in_use:
            gen = bounded.statement_gen(self, pgq, prepare, binary)
            if gen is not None:
                return gen
        return _BASE_PREPARE_GEN(self, pgq, prepare=prepare, binary=binary)  # type: ignore[no-any-return]

    def _raise_for_result(self, result: Any) -> Any:
        # psycopg's way out for a failed statement: nothing on the success path. A write
        # that found the server read-only (failover) must not leave the connection in use.
        if result.error_field(pq.DiagnosticField.SQLSTATE) == _READ_ONLY_SERVER:
            failover.found_read_only(self._conn)
        return super()._raise_for_result(result)  # type: ignore[misc]

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        conn = self._conn
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        parent = super().copy  # type: ignore[misc]
        if not conn._sp_fresh:
            return parent(*args, **kwargs)
        return self._sp_first_context(lambda: parent(*args, **kwargs))

    @contextmanager
    def _sp_first_context(self, make: Callable[[], Any]) -> Iterator[Any]:
        """A context manager whose entering is the borrow's first operation."""
        entered: list[Any] = []

        def enter() -> Any:
            manager = make()  # a new one for a retry: a failed one cannot be entered again
            value = manager.__enter__()
            entered.append(manager)
            return value

        value = _run_first(self._conn, enter, _ONE_SEND, self)
        manager = entered[-1]
        try:
            yield value
        except BaseException as exc:
            if not manager.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            manager.__exit__(None, None, None)

    def stream(self, query: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        conn = self._conn
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        parent = super().stream  # type: ignore[misc]
        if not conn._sp_fresh:
            return parent(query, *args, **kwargs)  # type: ignore[no-any-return]
        return self._sp_first_stream(lambda: parent(query, *args, **kwargs))

    def _sp_first_stream(self, make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        started: list[Iterator[Any]] = []

        def start() -> Any:
            rows = make()  # a new generator for a retry
            started.append(rows)
            return next(rows, _DONE)

        first = _run_first(self._conn, start, _ONE_SEND, self)
        if first is _DONE:
            return
        yield first
        yield from started[-1]


_DONE: Final = object()


def _run_first_execute(
    cursor: Any, query: Any, params: Any, prepare: bool | None, binary: bool | None
) -> Any:
    """psycopg's `Cursor.execute` as the borrow's first operation, the general way. Apart
    from `_sp_direct_execute` so that its closure does not make cells there."""
    return _run_first(
        cursor._conn,
        lambda: _CURSOR_EXECUTE(cursor, query, params, prepare=prepare, binary=binary),
        _ONE_SEND,
        cursor,
    )


class PooledCursor(PooledCursorMixin, psycopg.Cursor[Row]):
    """psycopg's default (server-side binding) cursor, with the pool's hooks."""

    __slots__ = ()


class PooledClientCursor(PooledCursorMixin, psycopg.ClientCursor[Row]):
    """psycopg's client-side binding cursor, with the pool's hooks."""

    __slots__ = ()


class PooledRawCursor(PooledCursorMixin, psycopg.RawCursor[Row]):
    """psycopg's raw-query cursor (``$1`` placeholders), with the pool's hooks."""

    __slots__ = ()


class PooledServerCursor(PooledCursorMixin, psycopg.ServerCursor[Row]):
    """psycopg's named (server-side) cursor, with the pool's hooks."""

    __slots__ = ()
