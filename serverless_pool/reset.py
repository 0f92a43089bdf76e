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
response), and `read_reset()` collects it at the next borrow. When the next borrow comes
before the answer (a loop with no gap), it waits for the rest of the round trip, and the
pool then sends the next resets of that connection in libpq's pipeline mode, each ended by
its own Sync: libpq accepts a second query before the first one's answer only in that
mode, and the Sync keeps ``DISCARD ALL`` alone in its implicit transaction, as it must be.
A borrow that comes before the answer to such a reset sends its first statement right
behind it (see `PooledCursorMixin`), and both answers come back in one round trip.
`wait_reset()` waits for the answer, for whatever cannot go behind it.
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
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_PIPELINE_OFF = pq.PipelineStatus.OFF
_OK = pq.ConnStatus.OK
_IDLE = pq.TransactionStatus.IDLE


def send_reset(pgconn: pq.abc.PGconn, pipelined: bool = False) -> None:
    """Send ``DISCARD ALL`` without waiting for the answer (raises if the send fails).

    `pipelined`: in libpq's pipeline mode, with its own Sync, so that the next borrow's
    first statement can follow before the answer comes; the connection stays in pipeline
    mode until `read_reset()` or `wait_reset()` has read the answer. It costs the client
    more instructions (the extended protocol's messages, two results), so the pool asks
    for it only when the last borrow came before the answer.
    """
    if pipelined:
        pgconn.enter_pipeline_mode()
        pgconn.send_query_params(DISCARD_ALL, None)
        pgconn.pipeline_sync()  # sends: some 30 bytes, which only a full socket buffer keeps
        return
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
    if pgconn.pipeline_status != _PIPELINE_OFF:
        return _pipelined_outcome(pgconn)
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


def _pipelined_outcome(pgconn: pq.abc.PGconn) -> int:
    """Read the reset's result, the end of its results and its Sync; leave pipeline mode."""
    # Expected: the result, None (the end of DISCARD ALL's results), the Sync. Anything
    # else (an error, a goodbye, more results) fails; a session that ended mid-way stops
    # answering at all, hence the bound on the reads.
    seen: list[pq.abc.PGresult | None] = []
    for _ in range(_MOST_READS):
        # The Sync's answer (ReadyForQuery) leaves the server in the same write as the
        # result; should it ever lag, wait for it briefly rather than let libpq block.
        if pgconn.is_busy() and not _await_input(pgconn, _END_WAIT):
            return FAILED
        result = pgconn.get_result()
        if result is not None and result.status == _PIPELINE_SYNC:
            break
        seen.append(result)
    else:
        return FAILED
    pgconn.exit_pipeline_mode()
    # Parse what came after the Sync's answer: a goodbye goes to the notice handlers.
    pgconn.is_busy()
    if (
        len(seen) == 2
        and seen[0] is not None
        and seen[0].status == _COMMAND_OK
        and seen[1] is None
        and pgconn.status == _OK
        and pgconn.transaction_status == _IDLE
    ):
        return DONE
    return FAILED


_MOST_READS: Final = 4
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
