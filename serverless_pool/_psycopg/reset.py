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
before the connection is lent (`answered_now()`, which never waits; `wait_answer()`,
bounded, when the answer is still on its way): **nothing of the next borrower is sent
before the reset is known to have worked.** A reset that failed (cancelled by the
borrower's own ``statement_timeout``, ``out of shared memory`` with many temporary
tables) or that is not answered in time means a fresh session instead.

The protocol is written once, as psycopg writes its own (`answer_gen`, a generator that
says when it must wait for the socket, see `psycopg.abc.PQGen`): the sync pool drives it
here; an async driver waits on the event loop instead.
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

__all__ = ["DISCARD_ALL", "DONE", "FAILED", "LATE", "answer_gen", "answered_now", "send_reset"]

DISCARD_ALL: Final = b"DISCARD ALL"

#: The reset's answer arrived and says it worked.
DONE: Final = 0
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


def answer_gen(pgconn: pq.abc.PGconn) -> PQGen[int]:
    """Read the answer to `send_reset()`: DONE, or FAILED.

    Expected: one COMMAND_OK result, then the end of the answer (ReadyForQuery), with the
    session idle and libpq's connection OK. Anything else (an error, the server's
    goodbye, more results) fails: the session is not known clean.
    """
    try:
        pgconn.consume_input()
        while pgconn.is_busy():
            yield _WAIT_R
            pgconn.consume_input()
        ok = _result_ok(pgconn)
        # The end of the answer (ReadyForQuery) leaves the server in the same write as
        # the result; should it ever lag, it is waited for like the rest.
        while pgconn.is_busy():
            yield _WAIT_R
            pgconn.consume_input()
        return _outcome(pgconn, ok)
    except psycopg.Error:
        return FAILED


def _result_ok(pgconn: pq.abc.PGconn) -> bool:
    result = pgconn.get_result()
    return result is not None and result.status == _COMMAND_OK


def _outcome(pgconn: pq.abc.PGconn, ok: bool) -> int:
    while pgconn.get_result() is not None:
        ok = False  # DISCARD ALL answers once; anything more is not ours to accept
    if ok and pgconn.status == _OK and pgconn.transaction_status == _IDLE:
        return DONE
    return FAILED


def answered_now(conn: PooledConnection[object]) -> bool:
    """Whether the reset's answer is in and says the session is clean; never waits.

    `answer_gen` for the common case, where the whole answer is in (one read): False
    also when it is still on its way, and then `wait_answer()`. The notifications the
    session received before the reset's ``UNLISTEN`` are dropped.
    """
    pgconn = conn.pgconn
    try:
        pgconn.consume_input()
        if pgconn.is_busy():
            return False
        ok = _result_ok(pgconn)
        # An end still to come (never seen: it travels with the result) leaves libpq
        # busy; `wait_answer()` then reads no result, and fails.
        return (
            not pgconn.is_busy() and _outcome(pgconn, ok) == DONE and conn._sp_clean_after_reset()
        )
    except psycopg.Error:
        return False


def wait_answer(conn: PooledConnection[object], timeout: float) -> int:
    """Wait at most `timeout` seconds for the reset's answer: DONE, FAILED or LATE.

    After LATE the answer may still come: the caller must close the connection.
    """
    pgconn = conn.pgconn
    if pgconn.status != _OK:
        return FAILED
    outcome = drive(answer_gen(pgconn), pgconn.socket, timeout)
    if outcome == DONE and not conn._sp_clean_after_reset():
        return FAILED
    return outcome


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
