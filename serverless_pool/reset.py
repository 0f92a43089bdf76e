"""The session reset of direct mode: ``DISCARD ALL`` after every borrow, off the request path.

A reset that depends on what the borrower ran is a guess: a SQL function can change any
setting, take any lock, create any table. So every connection that comes back gets
``DISCARD ALL``, which returns the server session to the state of a fresh one (settings
and role, temporary tables, advisory locks, cursors including ``WITH HOLD``, ``LISTEN``,
prepared statements, sequences' session state, cached plans), as PgBouncer's
``server_reset_query`` does. Startup parameters (the pool's timeouts, Django's time zone
and role) are the session's defaults, so they survive it.

It costs no round trip on the request path: `send_reset()` sends it when the connection
comes back and returns at once; the answer travels while the instance does something
else (Lambda posts the response and waits for the next event; a WSGI server writes the
response), and `read_reset()` collects it at the next borrow. Only a borrow that follows
its return immediately (a loop with no gap) waits for the rest of the round trip, in
`wait_reset()`.
"""

from __future__ import annotations

import select
import time
from typing import Final

import psycopg
from psycopg import pq

__all__ = [
    "DISCARD_ALL",
    "DONE",
    "FAILED",
    "LATE",
    "PENDING",
    "read_reset",
    "send_reset",
    "wait_reset",
]

DISCARD_ALL: Final = b"DISCARD ALL"

#: The reset's answer arrived and says it worked.
DONE: Final = 0
#: The answer has not arrived yet.
PENDING: Final = 1
#: The reset failed, or the session ended: the connection must be closed.
FAILED: Final = 2
#: No answer within the time allowed (a server that stopped answering): close it too.
LATE: Final = 3

_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_OK = pq.ConnStatus.OK
_IDLE = pq.TransactionStatus.IDLE


def send_reset(pgconn: pq.abc.PGconn) -> None:
    """Send ``DISCARD ALL`` without waiting for the answer (raises if the send fails)."""
    pgconn.send_query(DISCARD_ALL)
    if pgconn.flush():  # 11 bytes: only a full socket buffer leaves some behind
        raise psycopg.OperationalError("the session reset could not be sent whole")


def read_reset(pgconn: pq.abc.PGconn) -> int:
    """Collect the answer to `send_reset()` if it has arrived; never waits."""
    try:
        pgconn.consume_input()
        if pgconn.is_busy():
            return PENDING
        return _outcome(pgconn)
    except psycopg.Error:
        return FAILED


def wait_reset(pgconn: pq.abc.PGconn, timeout: float) -> int:
    """Wait at most `timeout` seconds for the answer to `send_reset()`: DONE, FAILED or LATE.

    After LATE the answer may still come: the caller must close the connection.
    """
    try:
        if not _await_input(pgconn, timeout):
            return LATE
        return _outcome(pgconn)
    except psycopg.Error:
        return FAILED


def _outcome(pgconn: pq.abc.PGconn) -> int:
    result = pgconn.get_result()
    ok = result is not None and result.status == _COMMAND_OK
    # The end of the answer (ReadyForQuery) leaves the server in the same write as the
    # result; should it ever lag, wait for it briefly rather than let libpq block.
    if pgconn.is_busy() and not _await_input(pgconn, _END_WAIT):
        return FAILED
    while pgconn.get_result() is not None:
        ok = False  # DISCARD ALL answers once; anything more is not ours to accept
    if ok and pgconn.status == _OK and pgconn.transaction_status == _IDLE:
        return DONE
    return FAILED


_END_WAIT: Final = 1.0


def _await_input(pgconn: pq.abc.PGconn, timeout: float) -> bool:
    """Read until libpq is no longer busy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    while pgconn.is_busy():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return False
        pgconn.consume_input()
    return True
