"""Statements bounded by the deadline, on the server, at no extra round trip.

When the client gives up at the deadline (an invocation's end, see
`serverless_pool.silent_server`), the server does not notice: a long query keeps
running, holding its locks and its transaction. Within `bound_statements_by_deadline()`
(``make_handler(statement_timeout=True)`` turns it on per invocation) every statement
carries the time left as its ``statement_timeout``, in the same message or the same
pipeline as the statement itself, so the server cancels it (SQLSTATE 57014) and rolls
its transaction back on its own:

- a transaction's ``BEGIN`` (``conn.transaction()``, Django's ``atomic()``, a connection
  out of autocommit, ``tpc_begin()``) is sent as ``BEGIN;\\nSET LOCAL statement_timeout
  = <ms>`` in one simple-protocol message: every statement of the transaction is bounded
  by the time left at its ``BEGIN``;
- an autocommit statement sent with the simple protocol (no parameters, or a
  client-side binding cursor such as Django's) is sent as ``SET LOCAL statement_timeout
  = <ms>;\\n<statement>``, one message, one implicit transaction; the cursor sees the
  statement's results only;
- an autocommit statement sent with the extended protocol (server-side parameters,
  binary results, prepared statements) goes out in libpq's pipeline mode as
  ``SELECT set_config('statement_timeout', '<ms>', true)`` then the statement, before
  one Sync: the same implicit transaction, one round trip;
- in the application's own pipeline (and ``executemany()``), the ``set_config`` is
  queued before the first statement of each implicit transaction.

``SET LOCAL`` and ``set_config(..., true)`` end with their transaction, so nothing
outlives the statement: safe behind PgBouncer in transaction mode. RDS Proxy pins the
session on either; the ``deadline_function`` setting names a SQL function that sets it
instead (``SELECT <fn>(<ms>)``), which RDS Proxy does not see.

Outside a transaction, a statement that PostgreSQL refuses in a transaction block or in
a pipeline (``VACUUM``, ``CREATE INDEX CONCURRENTLY``, ``CREATE DATABASE``...), and
anything that does not start with ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``,
``MERGE``, ``WITH``, ``VALUES``, ``TABLE`` or ``EXPLAIN`` (``CALL``, ``DO``, ``SET``...)
is sent unchanged, and so are ``copy()``, ``stream()`` and named cursors.

The statements are written in `serverless_pool._psycopg.bounded` (psycopg's execution
path, whose private names only that package uses); the pool's connection and cursors
call it once a process has entered `bound_statements_by_deadline` (one flag read per
statement before then).
"""

from __future__ import annotations

from types import TracebackType

from ._psycopg import bounded
from ._psycopg.bounded import bound_sql, statement_is_bounded

__all__ = ["bound_sql", "bound_statements_by_deadline", "statement_is_bounded"]


class bound_statements_by_deadline:
    """Within the block, statements carry the active deadline to the server.

    The deadline is `serverless_pool.deadline`'s (``make_handler`` sets one per
    invocation): ``with deadline_after(2.0), bound_statements_by_deadline(): ...``.
    Without a deadline nothing changes. ``bound_statements_by_deadline(False)`` turns
    the bound off within a block.
    """

    __slots__ = ("_enabled", "_token")

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled

    def __enter__(self) -> None:
        bounded.in_use = True
        self._token = bounded.enabled.set(self._enabled)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        bounded.enabled.reset(self._token)
