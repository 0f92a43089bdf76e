"""The borrow's first operation: sent again only where the server provably never ran it.

A session can end while its connection is idle in the pool or at the moment it is lent:
an ``idle_session_timeout`` firing at the thaw, an administrator or a failover ending
backends. Before the borrow's first operation is sent, a check that is more than
`RECHECK_AFTER` old is made again (one ``poll()``), and a session that ended is swapped
for a fresh one under the same Python object. After the send, the operation is sent once
more on a fresh session only when the server cannot have executed it:

- its bytes never left (libpq refused to queue it on a session already gone);
- the server's goodbye was parsed *before* it was sent: libpq hands an error that
  arrives while nothing is pending to the notice handlers, and a backend sends nothing
  after its goodbye, so it never read what followed;
- the goodbye is an idle-session timeout (57P05): PostgreSQL only arms that timer
  while the backend waits for a command (``PostgresMain`` in ``tcop/postgres.c``), so
  the backend had not read the statement;
- the operation commits nothing whatever happened: the ``BEGIN`` of
  ``conn.transaction()``, or the one psycopg sends first on a connection out of
  autocommit (sent here on its own, before the statement, so that its failure is told
  apart from the statement's).

Anything else is never sent again. A goodbye that answers the statement (57P01 from
``pg_terminate_backend()`` or a fast shutdown, 57P02) does not prove that it committed
nothing: with the simple query protocol (psycopg's for a statement without parameters)
PostgreSQL commits an implicit transaction before it sends ``CommandComplete``
(``exec_simple_query``: ``finish_xact_command()`` comes before ``EndCommand()``), a
backend ended while its commit waits for a synchronous standby has committed locally
(``SyncRepWaitForLSN`` in ``replication/syncrep.c`` warns that the transaction "has
already committed locally"), a procedure may ``COMMIT`` several times, and sequences and
other sessions (``nextval()``, ``pg_terminate_backend()``, dblink) are touched outside
any transaction. In autocommit mode the app then gets `StatementOutcomeUnknown`, which
is also the psycopg error it was (``except psycopg.errors.AdminShutdown`` still catches
it); inside a transaction psycopg's own error, since the transaction was rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
from psycopg import pq

from ..errors import CommitOutcomeUnknown, StatementOutcomeUnknown

if TYPE_CHECKING:
    from psycopg.abc import PQGen

    from .connection import PooledConnection

__all__ = [
    "HARMLESS",
    "ONE_SEND",
    "RECHECK_AFTER",
    "SEVERAL_SENDS",
    "TERMINATION_SQLSTATES",
    "failed",
    "run",
    "watch_commit",
]

RV = TypeVar("RV")

#: The server's notices that it ended the session: administrator command (also a fast
#: shutdown), crash of another server process, idle-session timeout.
TERMINATION_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P05"})
_IDLE_TIMEOUT: Final = "57P05"
#: Seconds after the borrow's check when the first operation checks the socket again.
RECHECK_AFTER: Final = 0.001

#: The operation commits nothing whatever happened (a BEGIN).
HARMLESS: Final = 0
#: The operation sends one message (one statement, or several in one simple-protocol text).
ONE_SEND: Final = 1
#: The operation sends several, answered one by one (``executemany()``): once one was
#: answered, a goodbye parsed before the next proves nothing about the first.
SEVERAL_SENDS: Final = 2

# psycopg's words for a query libpq refused to queue: nothing of it left.
_NOT_SENT: Final = ("sending query",)
_OK = pq.ConnStatus.OK
_IDLE = pq.TransactionStatus.IDLE
# SQLSTATEs of a session that ended: connection exceptions, and the server's shutdown or
# termination of the backend (which may come after the commit was made durable).
_LOST: Final = ("08", "57P01", "57P02", "57P03")


def run(
    conn: PooledConnection[Any],
    operation: Callable[[], RV],
    kind: int,
    cursor: Any = None,
) -> RV:
    """Run the borrow's first operation (the caller saw `conn._sp_fresh` set)."""
    checked_at, conn._sp_fresh = conn._sp_fresh, 0.0
    pgconn = conn.pgconn
    if (
        conn._sp_replace is None
        or conn._pipeline
        or (pgconn.status == _OK and pgconn.transaction_status != _IDLE)
    ):
        # Not the borrow's first exchange after all (something ran outside the hooks
        # and opened a transaction, or a pipeline holds it): nothing may be sent again.
        return operation()
    if pgconn.status != _OK or _monotonic() - checked_at > RECHECK_AFTER:
        _recheck(conn)
    if kind != HARMLESS and not conn._autocommit:
        _begin(conn)
    if cursor is not None:
        cursor._pgconn = conn.pgconn  # a slot of psycopg's cursors
    try:
        return operation()
    except psycopg.OperationalError as err:
        failed(conn, err, kind)
    if kind != HARMLESS and not conn._autocommit:
        _begin(conn)
    if cursor is not None:
        cursor._pgconn = conn.pgconn
    return operation()


def failed(conn: PooledConnection[Any], err: psycopg.OperationalError, kind: int) -> None:
    """The first operation failed: return after a fresh session took the place of one
    that provably never ran it (to send it again); raise otherwise."""
    if not _never_ran(conn, err, kind):
        if kind != HARMLESS and conn.pgconn.status != _OK and conn._autocommit:
            raise outcome_unknown(err) from err
        raise err
    if not conn._sp_swap():
        raise err


def _begin(conn: PooledConnection[Any]) -> None:
    """psycopg's BEGIN of a connection out of autocommit, sent again on a fresh session
    if the session ended under it."""
    try:
        conn._sp_begin()
    except psycopg.OperationalError as err:
        if not _never_ran(conn, err, HARMLESS) or not conn._sp_swap():
            raise
        conn._sp_begin()


def _recheck(conn: PooledConnection[Any]) -> None:
    """Look at the socket again; swap the session if it ended meanwhile."""
    pgconn = conn.pgconn
    if pgconn.status == _OK and not conn._sp_terminated and not conn._sp_watch.poll(0):
        return
    try:
        pgconn.consume_input()
        pgconn.is_busy()  # libpq parses here: a goodbye goes to the notice handlers
    except psycopg.OperationalError:
        pass
    if pgconn.status != _OK or conn._sp_terminated:
        conn._sp_swap()


def _never_ran(conn: PooledConnection[Any], err: psycopg.OperationalError, kind: int) -> bool:
    """After the first operation failed: whether the server provably never ran it."""
    if conn._sp_replace is None or conn.pgconn.status == _OK:
        return False  # the session is alive: the statement's own error
    if kind == HARMLESS or str(err).startswith(_NOT_SENT):
        return True
    if kind == SEVERAL_SENDS:
        return False
    # The goodbye came before the statement, or the backend was waiting for a command.
    return conn._sp_terminated or err.sqlstate == _IDLE_TIMEOUT


_unknown_classes: dict[type[psycopg.OperationalError], type[StatementOutcomeUnknown]] = {}


def outcome_unknown(err: psycopg.OperationalError) -> StatementOutcomeUnknown:
    """`StatementOutcomeUnknown` that is also `err`'s class, with its diagnostic."""
    cls = type(err)
    combined = _unknown_classes.get(cls)
    if combined is None:
        if issubclass(cls, StatementOutcomeUnknown):
            combined = cls
        else:
            combined = type(
                "StatementOutcomeUnknown",
                (StatementOutcomeUnknown, cls),
                {"__module__": StatementOutcomeUnknown.__module__},
            )
        _unknown_classes[cls] = combined
    return combined(
        "the server session ended while the borrow's first statement was in flight:"
        f" it may or may not have run, and it is not sent again ({err})",
        info=err._info,
        encoding=err._encoding,
    )


def watch_commit(conn: PooledConnection[Any], gen: PQGen[RV]) -> Generator[Any, Any, RV]:
    """`gen` (a ``COMMIT``), turning a connection lost before its answer into
    `CommitOutcomeUnknown`."""
    try:
        return (yield from gen)
    except psycopg.OperationalError as err:
        if conn.pgconn.status == _OK and not str(err.sqlstate or "").startswith(_LOST):
            raise  # the server answered: the outcome is known
        raise CommitOutcomeUnknown(
            "the connection was lost after COMMIT was sent and before the server"
            f" answered: the transaction may or may not have been committed ({err})."
            " It is not retried: check whether its effects are there before doing it again"
        ) from err
