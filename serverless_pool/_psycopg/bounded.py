"""Statements bounded by the deadline, written in psycopg's execution path.

What is sent for each kind of statement, and why, is documented in
`serverless_pool.statement_deadline`, the public side of this module.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from functools import partial
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg import errors as e
from psycopg import pq
from psycopg._preparing import Prepare
from psycopg.generators import execute, fetch_many, send

from ..deadline import current_deadline

if TYPE_CHECKING:
    from psycopg._queries import PostgresQuery
    from psycopg.abc import PQGen
    from psycopg.pq.abc import PGresult

    from .connection import PooledConnection

__all__ = ["begin_gen", "bound_sql", "enabled", "statement_gen", "statement_is_bounded"]

enabled: ContextVar[bool] = ContextVar("serverless_pool_statement_deadline", default=False)

_IDLE = pq.TransactionStatus.IDLE
_OK = pq.ConnStatus.OK
_TEXT = pq.Format.TEXT
_BINARY = pq.Format.BINARY
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_NO_PREPARE = Prepare.NO
_ClientCursor = psycopg.ClientCursor
_BASE_EXEC_COMMAND: Any = psycopg.Connection._exec_command
# Never ask the server for less than this: 0 would mean "no timeout". A deadline that
# has passed gets it too, so the server refuses the statement at once (57014).
_MIN_MS: Final = 1

# Statements PostgreSQL runs in a transaction block (and in a pipeline) whatever they
# do. Anything else may be refused there (VACUUM, CREATE INDEX CONCURRENTLY, CREATE
# DATABASE, ALTER SYSTEM...) or manage transactions itself (CALL, DO): sent unchanged.
_BOUNDED_WORDS: Final = frozenset(
    {b"select", b"insert", b"update", b"delete", b"merge", b"with", b"values", b"table"}
    | {b"explain"}
)
# The statement's first word, after white space, comments and opening parentheses.
_FIRST_WORD: Final = re.compile(rb"(?:\s+|\(|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.S)
# The common case, without a regex: a statement that starts with one of those words,
# told by its first four letters (no other statement starts with them).
_BOUNDED_HEADS: Final = frozenset(word[:4] for word in _BOUNDED_WORDS)


def statement_is_bounded(query: bytes) -> bool:
    """Whether an autocommit statement gets the bound (see the module's documentation)."""
    if query[:4].lower() in _BOUNDED_HEADS:
        return True
    match = _FIRST_WORD.match(query)
    return match is not None and match.group(1).lower() in _BOUNDED_WORDS


def bound_sql(function: bytes | None, ms: int, *, extended: bool) -> bytes:
    """The statement that sets ``statement_timeout`` to `ms` for the transaction.

    ``SET LOCAL`` where it is free of warnings (a simple-protocol message); in a
    pipeline, where ``SET LOCAL`` warns that it is outside a transaction block,
    ``set_config``; with a ``deadline_function``, a call to it.
    """
    if function is not None:
        return b"SELECT %s(%d)" % (function, ms)
    if extended:
        return b"SELECT set_config('statement_timeout', '%d', true)" % ms
    return b"SET LOCAL statement_timeout = %d" % ms


def _bound_ms(conn: PooledConnection[Any]) -> int | None:
    """Milliseconds left before the deadline, if statements are to be bounded now.

    Never more than the pool's own ``statement_timeout``: the bound replaces the
    session's value for the transaction, and must not loosen it.
    """
    deadline = current_deadline()
    if deadline is None or not enabled.get():
        return None
    ms = int((deadline - _monotonic()) * 1000)
    if ms < _MIN_MS:
        return _MIN_MS
    cap = conn._sp_statement_timeout_ms
    return ms if ms < cap else cap


# -- the statements -----------------------------------------------------------------

#: Set once a process first enters `bound_statements_by_deadline`: until then the pool's
#: connection and cursors run psycopg's own code after reading this flag.
in_use = False


def begin_gen(
    conn: PooledConnection[Any], command: bytes, result_format: pq.Format
) -> PQGen[Any] | None:
    """A transaction's BEGIN with the bound, or None to send it as psycopg does."""
    if result_format != _TEXT:
        return None
    ms = _bound_ms(conn)
    return None if ms is None else _bounded_begin_gen(conn, command, ms)


def _bounded_begin_gen(conn: PooledConnection[Any], command: bytes, ms: int) -> PQGen[Any]:
    function = conn._sp_deadline_function
    pipeline = conn._pipeline
    if pipeline is not None:
        # psycopg queues the BEGIN; the bound follows it in the same pipeline.
        yield from _BASE_EXEC_COMMAND(conn, command)
        bound = bound_sql(function, ms, extended=True)
        pipeline.command_queue.append(partial(conn.pgconn.send_query_params, bound, None))
        pipeline.result_queue.append(None)
        return None
    conn._check_connection_ok()
    pgconn = conn.pgconn
    pgconn.send_query(command + b";\n" + bound_sql(function, ms, extended=False))
    results: list[PGresult] = yield from execute(pgconn)
    for result in results:
        if result.status == _FATAL_ERROR:
            raise e.error_from_result(result, encoding=pgconn._encoding)
    if len(results) != 2:
        raise e.InternalError(f"received {len(results)} results from {command.decode()!r}")
    return results[0]


def statement_gen(
    self: Any, pgq: PostgresQuery, prepare: bool | None, binary: bool | None
) -> PQGen[None] | None:
    """psycopg's `_maybe_prepare_gen` (send one statement, read its results) for an
    autocommit statement to be bounded; None to send it as psycopg does."""
    conn = self._conn
    pipeline = conn._pipeline
    if (
        # In a transaction (bounded by its BEGIN), or in a pipeline's implicit one
        # (bounded by its first statement): what was sent since the last Sync is
        # still in flight, or queued.
        conn.pgconn.transaction_status != _IDLE
        or (pipeline is not None and pipeline.command_queue)
        or (ms := _bound_ms(conn)) is None
        or not statement_is_bounded(pgq.query)
    ):
        return None
    function = conn._sp_deadline_function
    if pipeline is not None:
        # This statement opens an implicit transaction, which the bound joins first.
        bound = bound_sql(function, ms, extended=True)
        pipeline.command_queue.append(partial(conn.pgconn.send_query_params, bound, None))
        pipeline.result_queue.append(None)
        return None
    fmt = self.format if binary is None else (_BINARY if binary else _TEXT)
    client_side = isinstance(self, _ClientCursor)
    if client_side and fmt == _BINARY:
        # psycopg refuses it, before anything is sent.
        return None
    prep, name = self._get_prepared(pgq, prepare)
    # A client-side binding cursor's query has its parameters merged already (its
    # `params` only keep them for reference): it is sent like one without.
    if prep is _NO_PREPARE and fmt == _TEXT and (client_side or not pgq.params):
        return _simple_gen(self, pgq, prep, name, bound_sql(function, ms, extended=False))
    return _extended_gen(self, pgq, prep, name, binary, bound_sql(function, ms, extended=True))


def _simple_gen(
    cursor: Any, pgq: PostgresQuery, prep: Prepare, name: bytes, bound: bytes
) -> PQGen[None]:
    """One simple-protocol message: the bound, then the statement."""
    conn = cursor._conn
    pgconn = cursor._pgconn
    # What psycopg's own send would record: Django's last_executed_query() reads it.
    cursor._query = pgq
    pgconn.send_query(bound + b";\n" + pgq.query)
    key = conn._prepared.maybe_add_to_cache(pgq, prep, name)
    results: list[PGresult] = yield from execute(pgconn)
    if results and results[0].status == _FATAL_ERROR:
        cursor._raise_for_result(results[0])  # the bound itself failed
    results = results[1:]
    if key is not None:
        conn._prepared.validate(key, prep, name, results)
    cursor._check_results(results)
    cursor._set_results(results)


def _extended_gen(
    cursor: Any,
    pgq: PostgresQuery,
    prep: Prepare,
    name: bytes,
    binary: bool | None,
    bound: bytes,
) -> PQGen[None]:
    """The bound and the statement in libpq's pipeline mode, before one Sync."""
    conn = cursor._conn
    pgconn = cursor._pgconn
    pgconn.enter_pipeline_mode()
    bound_results: list[PGresult] = []
    prepared: list[PGresult] = []
    try:
        pgconn.send_query_params(bound, None)
        if prep is _NO_PREPARE:
            cursor._execute_send(pgq, binary=binary, force_extended=True)
        else:
            if prep is Prepare.SHOULD:
                cursor._send_prepare(name, pgq)
            cursor._send_query_prepared(name, pgq, binary=binary)
        pgconn.pipeline_sync()
        key = conn._prepared.maybe_add_to_cache(pgq, prep, name)
        yield from send(pgconn)
        bound_results = yield from fetch_many(pgconn)
        if prep is Prepare.SHOULD:
            prepared = yield from fetch_many(pgconn)
        results: list[PGresult] = yield from fetch_many(pgconn)
        sync = yield from fetch_many(pgconn)
        if len(sync) != 1 or sync[0].status != _PIPELINE_SYNC:
            raise e.InternalError("unexpected results from a statement bounded by the deadline")
        pgconn.exit_pipeline_mode()
    except BaseException as err:
        # Answers may still be on their way: the session cannot be trusted to answer the
        # next statement in order. Closed, it is never reused.
        if pgconn.status == _OK:
            pgconn.finish()
        # The server's own error, if it sent one before the connection was lost (its
        # goodbye, 57P01...): what psycopg raises outside a pipeline, and what tells
        # the pool whether the statement may be sent again on a fresh session.
        failed = [r for r in (*bound_results, *prepared) if r.status == _FATAL_ERROR]
        if failed and isinstance(err, psycopg.OperationalError):
            raise e.error_from_result(failed[0], encoding=pgconn._encoding) from None
        raise
    for result in (*bound_results, *prepared):
        if result.status == _FATAL_ERROR:
            cursor._raise_for_result(result)
    if key is not None:
        conn._prepared.validate(key, prep, name, results)
    cursor._check_results(results)
    cursor._set_results(results)
