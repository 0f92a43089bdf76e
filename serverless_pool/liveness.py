"""Is this idle connection still alive? Two checks, cheapest first.

`watch_socket()` makes a poll object for a zero-timeout ``poll()`` on the connection's
socket, kept with the connection (`PooledConnection._sp_socket_quiet()`): an idle
connection has nothing to read, so anything readable (the server's goodbye message, an
EOF, a reset) means the server has ended the session, even though libpq still reports
the connection as OK. It costs about a microsecond and runs on every borrow.

`ping()` is a real round trip (an empty query) bounded by a timeout. It runs only after
a long idle gap, when the instance may have been frozen and a NAT, proxy or firewall
may have dropped the connection without telling either side. The timeout matters: a
server that stopped answering must cost a bounded wait, not a hang.
"""

from __future__ import annotations

import select
import time

import psycopg
from psycopg import pq

__all__ = ["ping", "watch_socket"]

_ALARMS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


def watch_socket(fd: int) -> select.poll:
    """A poll object watching `fd` for anything an idle connection should not see."""
    poller = select.poll()
    poller.register(fd, _ALARMS)
    return poller


def ping(pgconn: pq.abc.PGconn, timeout: float) -> bool:
    """Send an empty query and wait at most `timeout` seconds for its answer.

    Only call it on an idle connection that nobody else uses. Returns False when the
    connection is broken or too slow; the caller must then close it, because a late
    answer may still be on its way.
    """
    if pgconn.status != pq.ConnStatus.OK:
        return False
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    deadline = time.monotonic() + timeout
    try:
        pgconn.send_query(b"")
        while pgconn.flush():
            if not _wait(pgconn.socket, select.POLLOUT, deadline):
                return False
        while pgconn.is_busy():
            if not _wait(pgconn.socket, select.POLLIN, deadline):
                return False
            pgconn.consume_input()
        ok = True
        while (result := pgconn.get_result()) is not None:
            ok = ok and result.status == pq.ExecStatus.EMPTY_QUERY
    except psycopg.Error:
        return False
    return ok and pgconn.transaction_status == pq.TransactionStatus.IDLE


def _wait(fd: int, event: int, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    poller = select.poll()
    poller.register(fd, event | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(remaining * 1000))
