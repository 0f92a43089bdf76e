"""The session reset of direct mode: ``DISCARD ALL`` after every borrow, answered before
the next borrow sends anything.

A reset that depends on what the borrower ran is a guess: a SQL function can change any
setting, take any lock, create any table. So every connection that comes back gets
``DISCARD ALL``, which returns the server session to the state of a fresh one (settings
and role, temporary tables, advisory locks, cursors including ``WITH HOLD``, ``LISTEN``,
prepared statements, sequences' session state, cached plans), as PgBouncer's
``server_reset_query`` does. Startup parameters (the pool's timeouts, Django's time zone
and role) are the session's defaults, so they survive it.

`send_reset()` sends it when the connection comes back and returns at once: the answer
travels while the instance does something else (Lambda posts the response and waits for
the next event; a WSGI server writes the response). The next borrow reads the answer
before the connection is lent (`read_answer()`, which never waits; `wait_answer()`,
bounded, when the answer is still on its way): **nothing of the next borrower is sent
before the reset is known to have worked.** A reset that failed (cancelled by the
borrower's own ``statement_timeout``, ``out of shared memory`` with many temporary
tables) or that is not answered in time means a fresh session instead.

The answer is read in one place, `read_answer()`, which never waits; `answer_gen` wraps
it as psycopg writes its own protocol (a generator that says when it must wait for the
socket, see `psycopg.abc.PQGen`): the sync pool drives it here, an async driver waits on
the event loop instead.
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING, Final

import psycopg
from psycopg import pq
from psycopg.waiting import Ready, Wait

if TYPE_CHECKING:
    from psycopg.abc import PQGen

    from .connection import PooledConnection

__all__ = [
    "DISCARD_ALL",
    "DONE",
    "FAILED",
    "LATE",
    "PENDING",
    "answer_gen",
    "drive",
    "read_answer",
    "send_reset",
    "wait_answer",
]

DISCARD_ALL: Final = b"DISCARD ALL"

#: The reset's answer arrived and says it worked.
DONE: Final = 0
#: Nothing of the answer has arrived yet.
PENDING: Final = 1
#: The reset failed, or the session ended: the connection must be closed.
FAILED: Final = 2
#: No answer within the time allowed (a server that stopped answering): close it too.
LATE: Final = 3

_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_OK = pq.ConnStatus.OK
_IDLE = pq.TransactionStatus.IDLE
_WAIT_R: Final = Wait.R
_POLL_IN: Final = select.POLLIN | select.POLLERR | select.POLLHUP


def send_reset(pgconn: pq.abc.PGconn) -> None:
    """Send ``DISCARD ALL`` without waiting for the answer (raises if it cannot be sent).

    11 bytes: only a full socket buffer leaves some behind, which libpq sends at its
    next read.
    """
    pgconn.send_query(DISCARD_ALL)


def read_answer(conn: PooledConnection[object]) -> int:
    """Read what has arrived of the answer to `send_reset()`, never waiting: DONE,
    FAILED, or PENDING (nothing of it read yet: wait for the socket, then call again).

    Expected: one COMMAND_OK result and the end of the answer (ReadyForQuery, sent in
    the same write), with the session idle; anything else (an error, the server's
    goodbye, more results, an end that lags behind its result) fails: the session is
    not known clean. Then no goodbye came with it (over TLS libpq reads one record at a
    time: the socket is looked at again), and the notifications the session received
    before the reset's ``UNLISTEN`` are dropped. Written out in one function: the quick
    borrow runs it on every request.
    """
    pgconn = conn.pgconn
    try:
        pgconn.consume_input()
        if pgconn.is_busy():
            return PENDING
        result = pgconn.get_result()
        if result is None or result.status != _COMMAND_OK or pgconn.is_busy():
            return FAILED
        # Parsed by is_busy(): libpq reports IDLE only once the end of the answer is in
        # with no result left to get (ACTIVE while one is: DISCARD ALL answers once,
        # anything more is not ours to accept), the connection good (UNKNOWN once it is
        # bad) and the session outside a transaction.
        if pgconn.transaction_status != _IDLE:
            return FAILED
    except psycopg.Error:
        return FAILED
    if conn._sp_look_again and (conn._sp_terminated or conn._sp_watch.poll(0)):
        return FAILED
    notifies = conn._sp_notifies
    if notifies:
        notifies.clear()
    return DONE


def answer_gen(conn: PooledConnection[object]) -> PQGen[int]:
    """`read_answer()` waiting for the socket as psycopg's generators do (see
    `psycopg.abc.PQGen`): DONE or FAILED. A sync or an async driver runs it."""
    while True:
        outcome = read_answer(conn)
        if outcome != PENDING:
            return outcome
        yield _WAIT_R


def wait_answer(conn: PooledConnection[object], timeout: float) -> int:
    """Wait at most `timeout` seconds for the reset's answer: DONE, FAILED or LATE.

    After LATE the answer may still come: the caller must close the connection.
    """
    pgconn = conn.pgconn
    if pgconn.status != _OK:
        return FAILED
    return drive(answer_gen(conn), pgconn.socket, timeout)


def drive(gen: PQGen[int], fileno: int, timeout: float) -> int:
    """Run `gen` to its end, waiting for the socket at most `timeout` seconds in all:
    its result, or LATE."""
    deadline = time.monotonic() + timeout
    poller: select.poll | None = None
    try:
        wait = gen.send(None)  # type: ignore[arg-type]
        while True:
            assert wait == _WAIT_R
            if poller is None:
                poller = select.poll()
                poller.register(fileno, _POLL_IN)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                gen.close()
                return LATE
            wait = gen.send(Ready.R)
    except StopIteration as done:
        outcome: int = done.value
        return outcome
