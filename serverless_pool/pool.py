"""`ServerlessPool`: a connection pool for one process that is frozen and thawed.

There are no background threads: a frozen Lambda instance runs none, and a thread
would only wake up to find its world changed. Every maintenance step (closing
connections that lived or idled too long, checking liveness, reconnecting, resetting
session state) runs inline when a connection is borrowed or returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow

from . import deadline as _deadline
from . import failover, lifecycle, silent_server
from . import stats as st
from ._psycopg import PooledConnection, PooledCursor, PooledServerCursor
from ._psycopg import reset as _reset
from .conninfo import describe_conninfo, parse_conninfo
from .credentials import provider_for
from .errors import (
    ConnectionFailed,
    CredentialsUnavailable,
    PoolClosed,
    PoolError,
    PoolTimeout,
    SettingsError,
)
from .failures import failure_kind, is_login_rejected, is_transient
from .liveness import ping
from .settings import PoolSettings

__all__ = ["ServerlessPool"]

logger = logging.getLogger("serverless_pool")
_monotonic = time.monotonic

_OK: Final = pq.ConnStatus.OK
_IDLE: Final = pq.TransactionStatus.IDLE
_RESETTABLE: Final = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)
_RESET_DONE: Final = _reset.DONE
_read_reset_answer: Final = _reset.read_answer
_DISCARD_ALL: Final = _reset.DISCARD_ALL

#: How long before the server's idle_session_timeout an idle connection is closed rather
#: than lent: this share of the timeout, or a second (at most half the timeout), whichever
#: is longer, so that a statement sent at once never meets the server's goodbye.
SERVER_IDLE_MARGIN: Final = 0.1

Conninfo = str | Callable[[], str]
Password = str | Callable[[], str]
#: A borrower's callback for `reclaim()` (see `ServerlessPool.acquire_held`).
Holder = Callable[[PooledConnection[Any]], None]
# How long a held borrow waits for reclaim() to put back the token it holds for a moment.
_REGISTER_WAIT: Final = 1.0


class _Entry:
    """Book-keeping for one connection the pool owns, reachable from the connection.

    Whether it is on loan is a token in a list here (`loan`): taking it back is one
    atomic ``list.pop()``, so of two threads returning the same connection exactly one
    succeeds, with no lock taken (see `ServerlessPool` on the pool's locking).

    The token is ``True``, or, for a borrower that holds the connection in state of its
    own (`ServerlessPool.acquire_held`), that borrower's `Holder`: `reclaim()` asks it to
    let go instead of taking the connection from under it. The token goes with the loan,
    so the holder is forgotten when the loan ends, at no cost to the return.
    """

    __slots__ = ("conn", "expires_at", "last_used", "loan", "owner", "resetting")

    def __init__(
        self, owner: ServerlessPool, conn: PooledConnection[Any], now: float, lifetime: float
    ) -> None:
        self.owner = owner
        self.conn = conn
        # A deque, not a list: a list emptied and refilled on every request reallocates
        # its array both times, a deque keeps its block (with the idle stack, about 870
        # client instructions per request, counted).
        self.loan: deque[bool | Holder] = deque()
        self.last_used = now
        # A DISCARD ALL was sent when the connection came back; its answer is unread.
        self.resetting = False
        self.renew(now, lifetime)
        conn._sp_entry = self

    @property
    def lent(self) -> bool:
        return bool(self.loan)

    def renew(self, now: float, lifetime: float) -> None:
        """Start the lifetime of a new server session."""
        # Up to 10% shorter, so that a fleet started together does not reconnect in step.
        self.expires_at = now + lifetime * (1.0 - 0.1 * random.random())


class ServerlessPool:
    """A thread-safe pool of psycopg 3 connections for serverless functions.

    :param conninfo: a libpq connection string or ``postgresql://`` URL, or a callable
        returning one (called for every new connection). When omitted, the
        ``SERVERLESS_POOL_DATABASE_URL`` environment variable is used.
    :param password: the password, or a callable returning it (called for every new
        connection, e.g. to fetch an RDS IAM token). Never logged or shown.
    :param configure: called with each new connection before its first use.
    :param settings: a ready `PoolSettings`; keyword arguments override it.
    :param overrides: any setting of the schema (see `serverless_pool.settings.SCHEMA`);
        settings not given are read from ``SERVERLESS_POOL_*`` environment variables.

    No connection is opened until the first borrow.

    Locking: the common borrow and return take no lock. The idle connections are a
    stack that only ever changes through ``list.pop()`` and ``list.append()``, each
    atomic, so a borrower that pops an entry owns it; a return takes the entry's loan
    token with one atomic pop. Everything else (opening and closing connections, the
    books of the pool's size, waiting for a free connection) happens under the lock.
    A waiting borrower counts itself in `_waiting` before it looks at the stack for
    the last time, and a return looks at `_waiting` after it pushed: so either the
    borrower sees the connection, or the return sees the borrower and wakes it.
    """

    def __init__(
        self,
        conninfo: Conninfo | None = None,
        *,
        password: Password | None = None,
        configure: Callable[[PooledConnection[Any]], None] | None = None,
        settings: PoolSettings | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> None:
        if settings is None:
            self.settings = PoolSettings.load(overrides, environ=environ)
        else:
            self.settings = settings.replace(**overrides) if overrides else settings
        env = os.environ if environ is None else environ
        if conninfo is None:
            conninfo = env.get("SERVERLESS_POOL_DATABASE_URL")
            if not conninfo:
                raise SettingsError(
                    "no database to connect to: pass a conninfo or set the"
                    " SERVERLESS_POOL_DATABASE_URL environment variable"
                )
        if isinstance(conninfo, str):
            parse_conninfo(conninfo)  # fail now, with a clear message, not at first use
        elif not callable(conninfo):
            raise SettingsError(
                f"conninfo: expected a connection string or a callable returning one,"
                f" got {type(conninfo).__name__}"
            )
        if password is not None and not (isinstance(password, str) or callable(password)):
            raise SettingsError(
                f"password: expected a string or a callable returning one,"
                f" got {type(password).__name__}"
            )
        self._conninfo = conninfo
        self._password = password
        self._credentials = provider_for(password, self.settings)
        self._configure = configure
        self.name = self.settings.name

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # A stack: the most recently used is reused first (a deque, see `_Entry.loan`).
        self._idle: deque[_Entry] = deque()
        self._entries: set[_Entry] = set()  # every open connection: idle, lent or in between
        self._opening = 0  # connections being opened, not yet in _entries
        self._waiting = 0
        self._closed = False
        self._stats = st.PoolStats()
        # A connection used this recently needs no ping and cannot be idle too long.
        settings = self.settings
        # The server ends a session idle for idle_session_timeout (set by the pool in
        # direct mode): a connection idle for nearly that long is closed instead of
        # lent, so that the server's goodbye never races the borrow's first statement.
        timeout = settings.idle_session_timeout
        self._server_idle_limit = (
            timeout - max(timeout * SERVER_IDLE_MARGIN, min(timeout / 2, 1.0))
            if settings.uses_session_state and timeout
            else float("inf")
        )
        self._recent = min(settings.ping_after_idle, settings.max_idle, self._server_idle_limit)
        # Every return sends DISCARD ALL (direct mode; behind a proxy it would reset
        # someone else's session, or pin one).
        self._discards = self.settings.session_reset
        # The prepared statements psycopg keeps for a session: forgotten at its reset.
        self._prepares = self.settings.prepare_threshold is not None
        # Borrows and resets of the fast paths: counted apart, as plain integers.
        self._quick_borrows = 0
        self._quick_returns = 0  # each sent a reset when the pool discards (direct mode)
        # The holders of `acquire_held` calls between acquire() and registering.
        self._holding: list[Holder] = []
        lifecycle.register(self)

    # -- public API ------------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> _Borrow:
        """Borrow a connection for a ``with`` block; it is returned whatever happens.

        ``with pool.connection() as conn: conn.execute(...)``
        """
        borrow = _new_borrow(_Borrow)  # no __init__ frame: this runs for every request
        borrow._pool = self
        borrow._timeout = timeout
        return borrow

    def acquire(self, timeout: float | None = None) -> PooledConnection[TupleRow]:
        """Borrow a connection; give it back with `release()` (in a ``finally``).

        Waits at most `timeout` seconds (default: the ``acquire_timeout`` setting, and
        never past the deadline of the current invocation) and raises `PoolTimeout`.
        """
        now = _monotonic()
        # The common case, with no lock (see the class docstring): the most recently
        # used connection is young and was used moments ago, and the answer to its reset
        # is in and good (read without waiting) or, with no reset pending, its socket is
        # quiet (one poll() call). An answer still on its way is waited for by the slow
        # path: nothing of the borrower may be sent before it.
        idle = self._idle
        try:
            entry = idle.pop()
        except IndexError:
            return self._acquire_checked(now, timeout)
        conn = entry.conn
        if now - entry.last_used < self._recent and now < entry.expires_at:
            if entry.resetting:
                ready = _read_reset_answer(conn) == _RESET_DONE
                if ready:
                    entry.resetting = False
            else:
                ready = not conn._sp_watch.poll(0)
            if ready and not self._closed:
                entry.loan.append(True)
                self._quick_borrows += 1
                # Idle time counts from the start of the last borrow: the return needs
                # no clock then (a borrow longer than ping_after_idle makes the next one
                # ping, which is all it costs).
                entry.last_used = conn._sp_fresh = now
                return conn
        # Back on the stack, for the slow path to look at under the lock.
        idle.append(entry)
        return self._acquire_checked(now, timeout)

    def _acquire_checked(self, now: float, timeout: float | None) -> PooledConnection[TupleRow]:
        """Borrow the slow way: expire, ping, connect, or wait, as needed."""
        settings = self.settings
        deadline = now + (settings.acquire_timeout if timeout is None else timeout)
        outer = _deadline.current_deadline()
        if outer is not None and outer < deadline:
            deadline = outer
        started = now
        waited = False
        while True:
            entry: _Entry | None = None
            stale: list[tuple[_Entry, str]] = []
            with self._lock:
                if self._closed:
                    raise PoolClosed(f"the pool {self.name!r} is closed")
                idle = self._idle
                while True:
                    try:
                        candidate = idle.pop()
                    except IndexError:  # empty, or emptied by a borrow meanwhile
                        break
                    if now >= candidate.expires_at:
                        reason = st.EXPIRED
                    elif now - candidate.last_used >= self._server_idle_limit:
                        reason = st.SERVER_IDLE_TIMEOUT
                    elif (
                        now - candidate.last_used > settings.max_idle
                        and self._size() > settings.min_size
                    ):
                        reason = st.IDLE_TOO_LONG
                    else:
                        entry = candidate
                        break
                    self._entries.discard(candidate)  # off the books now, closed below
                    stale.append((candidate, reason))
                if entry is None and self._size() >= settings.max_size:
                    remaining = deadline - now
                    if remaining <= 0:
                        self._stats.add(st.TIMEOUTS)
                        raise PoolTimeout(
                            f"the pool {self.name!r} had no free connection within"
                            f" {now - started:.3f} s (max_size={settings.max_size},"
                            f" all in use)"
                        )
                    if not waited:
                        self._stats.add(st.WAITS)
                        waited = True
                    self._waiting += 1
                    try:
                        # A return pushes, then looks for waiters: counted now, this
                        # borrower either sees what was pushed or gets woken.
                        if not idle:
                            self._cond.wait(remaining)
                    finally:
                        self._waiting -= 1
                    now = time.monotonic()
                    continue
                opening = entry is None
                if opening:
                    self._opening += 1
            try:
                for old, reason in stale:
                    self._discard(old, reason)
                if entry is None:
                    conn = self._connect(deadline)
                    entry = _Entry(self, conn, time.monotonic(), settings.max_lifetime)
                elif not self._check(entry, now):
                    entry = None
            except BaseException:
                with self._lock:
                    if opening:
                        self._opening -= 1
                    self._cond.notify()
                raise
            with self._lock:
                if opening:
                    self._opening -= 1
                    if entry is not None:
                        self._entries.add(entry)
                if entry is None:
                    now = time.monotonic()
                    continue
                if self._closed:
                    self._entries.discard(entry)
                    self._cond.notify()
                    closing = entry
                else:
                    closing = None
                    entry.loan.append(True)
                    entry.last_used = now
                    self._stats.add(st.BORROWS)
                    if waited:
                        self._stats.add(st.WAIT_MS, int((time.monotonic() - started) * 1000))
            if closing is not None:
                closing.conn.close()
                raise PoolClosed(f"the pool {self.name!r} is closed")
            conn = entry.conn
            conn._sp_fresh = time.monotonic()
            return conn

    def release(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection from `acquire()`.

        An open transaction is rolled back, session state the borrower changed is reset,
        and a connection in a state that cannot be cleaned is closed instead.
        """
        try:
            entry: _Entry = conn._sp_entry  # type: ignore[attr-defined]
            if entry.owner is not self:
                raise AttributeError
            entry.loan.pop()  # atomic: of two returns of one loan, one fails here
        except (AttributeError, IndexError):
            raise PoolError(
                f"this connection is not on loan from the pool {self.name!r}"
                " (returned twice, or borrowed elsewhere)"
            ) from None
        # Nothing Python-side to undo and no transaction open (the common case): the
        # reset goes out without waiting for its answer, and the connection back on the
        # stack. Python-side changes mark the connection unclean
        # as they happen, or are seen by identity here; a broken connection reports an
        # UNKNOWN transaction status.
        baseline = conn._sp_baseline  # type: ignore[attr-defined]
        pgconn = conn.pgconn
        # A libpq trace the borrower started (``conn.pgconn.trace(fd)``) would write the
        # next borrower's statements to its file; libpq cannot say whether one is on.
        pgconn.untrace()
        if (
            not conn._sp_unclean  # type: ignore[attr-defined]
            and pgconn.transaction_status == _IDLE
            and conn.cursor_factory is baseline.cursor_factory
            and conn.row_factory is baseline.row_factory
            and conn.server_cursor_factory is baseline.server_cursor_factory
            and not conn._sp_notifies  # type: ignore[attr-defined]
            and not self._closed
        ):
            if self._discards:
                if self._prepares:
                    conn._sp_forget_prepared()  # type: ignore[attr-defined]
                try:
                    # `_reset.send_reset()`, written out: this runs for every request.
                    pgconn.send_query(_DISCARD_ALL)
                except psycopg.Error:
                    pass  # the slow path below closes it
                else:
                    entry.resetting = True
                    self._quick_returns += 1
                    self._idle.append(entry)
                    if self._waiting:
                        self._wake_one()
                    return
            else:
                self._quick_returns += 1
                self._idle.append(entry)
                if self._waiting:
                    self._wake_one()
                return
        with self._lock:
            self._stats.add(st.RETURNS)
        reason: str | None
        try:
            reason = self._reset(entry)
        except BaseException:
            reason = st.RESET_FAILED
            raise
        finally:
            now = time.monotonic()
            if reason is None and now >= entry.expires_at:
                reason = st.EXPIRED
            with self._lock:
                if reason is None and not self._closed:
                    entry.last_used = now
                    self._idle.append(entry)
                    keep = True
                else:
                    keep = False
                if self._waiting:
                    self._cond.notify()
            if not keep:
                self._discard(entry, reason)

    def _wake_one(self) -> None:
        with self._lock:
            self._cond.notify()

    def on_loan(self) -> int:
        """How many connections are on loan right now."""
        entries = self._entries
        if len(entries) <= len(self._idle):  # the common case at the end of a request
            return 0
        return sum(1 for entry in list(entries) if entry.loan)

    def reclaim(self) -> int:
        """Take back every connection still on loan, as `release()` would; returns how many.

        For the end of a unit of work (a Lambda invocation) whose borrowers are all done:
        a connection the app forgot to return is cleaned and reused, not leaked. A loan
        from `acquire_held` is its holder's to end: the pool calls the holder, which lets
        go of the connection under its own lock and gives it back.
        """
        with self._lock:
            loans = [entry for entry in self._entries if entry.lent]
        return sum(self._take_back(entry) for entry in loans)

    def acquire_held(
        self, holder: Holder, timeout: float | None = None
    ) -> PooledConnection[TupleRow]:
        """`acquire()` for a borrower that keeps the connection in state of its own (a
        framework's connection object) and may still hold it when `reclaim()` runs.

        `reclaim()` then calls ``holder(conn)`` instead of taking the connection from
        under the borrower: the holder makes sure that none of its code paths can use the
        connection any more (under its own lock), and gives it back with `release()`.
        It may be called from another thread, and after the borrower let go by itself
        (then it does nothing). The holder is the loan's token (see `_Entry`): no
        connection the pool lends to someone else ever has it.
        """
        holding = self._holding
        # Counted before the borrow: reclaim() leaves an unregistered loan alone while a
        # held borrow may own it (between acquire() and the token below).
        holding.append(holder)
        try:
            conn = self.acquire(timeout)
            loan = conn._sp_entry.loan
            try:
                loan[0] = holder  # atomic; IndexError while reclaim() holds the token
            except IndexError:
                self._register_late(loan, holder)
        finally:
            holding.remove(holder)
        return conn

    def _register_late(self, loan: deque[bool | Holder], holder: Holder) -> None:
        # reclaim() took the token to look at it and puts it back: this borrow is counted.
        give_up = time.monotonic() + _REGISTER_WAIT
        while time.monotonic() < give_up:
            time.sleep(0)
            try:
                loan[0] = holder
                return
            except IndexError:
                continue
        raise PoolError(f"the pool {self.name!r} took this connection back before it was held")

    def _take_back(self, entry: _Entry) -> int:
        """Take back one loan for `reclaim()`; 1 if it was (or its holder was asked)."""
        loan = entry.loan
        for _ in range(3):  # a loan that changes hands under reclaim() is looked at again
            try:
                token = loan[0]
            except IndexError:
                return 0  # returned meanwhile by its borrower
            if token is not True:
                token(entry.conn)  # type: ignore[operator]
                return 1
            try:
                # Atomic: the token is the pool's now, unless the loan ended or its
                # holder registered meanwhile.
                loan.remove(True)
            except ValueError:
                continue
            # Looked at while the token is out, so that no held borrow can register and
            # leave `_holding` unseen: one still counted may own this loan.
            held_borrow = bool(self._holding)
            loan.append(True)
            if held_borrow:
                return 0  # its holder will be registered at the next reclaim()
            with contextlib.suppress(PoolError):  # returned meanwhile by its borrower
                self.release(entry.conn)
            return 1
        return 0

    def warm(self, count: int | None = None, timeout: float | None = None) -> int:
        """Open connections ahead of use (e.g. in Lambda's init phase).

        Opens up to `count` (default ``min_size``, at least 1) idle connections and
        returns how many the pool now holds idle.
        """
        wanted = max(1, self.settings.min_size) if count is None else count
        wanted = min(wanted, self.settings.max_size)
        borrowed: list[PooledConnection[TupleRow]] = []
        try:
            while len(borrowed) < wanted and self._size() < self.settings.max_size + len(borrowed):
                borrowed.append(self.acquire(timeout))
                if len(self._idle) + len(borrowed) >= wanted:
                    break
        finally:
            for conn in borrowed:
                self.release(conn)
        return len(self._idle)

    def drain(self) -> int:
        """Close every idle connection now; the pool stays usable. Returns how many."""
        idle = self._take_idle()
        for entry in idle:
            self._discard(entry, None)
        return len(idle)

    def close(self) -> None:
        """Close idle connections and refuse new borrows; loans are closed on return."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for entry in self._take_idle():
            self._discard(entry, None)
        logger.debug("pool %r closed", self.name)

    def _take_idle(self) -> list[_Entry]:
        """Empty the stack of idle connections (in place: borrowers pop it lock-free)."""
        taken = []
        idle = self._idle
        while True:
            try:
                taken.append(idle.pop())
            except IndexError:
                return taken

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        """Counters (see `serverless_pool.stats`) and the current sizes."""
        with self._lock:
            return self._report(self._stats.get())

    def pop_stats(self) -> dict[str, int]:
        """Like `stats()`, and reset the counters."""
        with self._lock:
            counts = self._report(self._stats.pop())
            self._quick_borrows = self._quick_returns = 0
            return counts

    def _report(self, counts: dict[str, int]) -> dict[str, int]:
        if self._quick_borrows:
            counts[st.BORROWS] = counts.get(st.BORROWS, 0) + self._quick_borrows
            counts[st.REUSED] = counts.get(st.REUSED, 0) + self._quick_borrows
        if self._quick_returns:
            counts[st.RETURNS] = counts.get(st.RETURNS, 0) + self._quick_returns
            if self._discards:
                counts[st.RESETS] = counts.get(st.RESETS, 0) + self._quick_returns
        counts.update(self._gauges())
        return counts

    def __enter__(self) -> ServerlessPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        target = (
            describe_conninfo(self._conninfo) if isinstance(self._conninfo, str) else "callable"
        )
        state = "closed" if self._closed else f"size={self._size()}/{self.settings.max_size}"
        return f"<{type(self).__name__} {self.name!r} {target} {state}>"

    # -- internals -------------------------------------------------------------------

    def _size(self) -> int:
        return len(self._entries) + self._opening

    def _gauges(self) -> dict[str, int]:
        return {
            "pool_size": self._size(),
            "pool_available": len(self._idle),
            "pool_in_use": sum(entry.lent for entry in self._entries),
            "pool_max": self.settings.max_size,
            "requests_waiting": self._waiting,
        }

    def _check(self, entry: _Entry, now: float) -> bool:
        """Liveness of an idle connection about to be lent; closes it if dead."""
        conn = entry.conn
        pgconn = conn.pgconn
        settings = self.settings
        if entry.resetting:
            # The answer to its reset is late (a borrow right after the return), or
            # says the session ended: the server's goodbye comes after it. Nothing of
            # the borrower is sent before a good answer; without one, a fresh session.
            entry.resetting = False
            outcome = _reset.wait_answer(conn, _bounded(settings.ping_timeout))
            if outcome != _RESET_DONE:
                if outcome == _reset.LATE:
                    reason = st.PING_FAILED  # the server stopped answering
                elif pgconn.status != _OK or conn._sp_terminated:
                    reason = st.CLOSED_BY_SERVER
                else:
                    reason = st.RESET_FAILED
                self._discard(entry, reason)
                return False
        if pgconn.status != _OK or pgconn.transaction_status != _IDLE:
            self._discard(entry, st.BAD_STATE)
            return False
        if not conn._sp_socket_quiet():
            # Usually the server's goodbye; a stray notice would pass the ping.
            self._stats.add(st.PINGS)
            if not ping(pgconn, settings.ping_timeout) or conn._sp_terminated:
                self._discard(entry, st.CLOSED_BY_SERVER)
                return False
        elif now - entry.last_used >= settings.ping_after_idle:
            self._stats.add(st.PINGS)
            if not ping(pgconn, settings.ping_timeout):
                self._discard(entry, st.PING_FAILED)
                return False
        self._stats.add(st.REUSED)
        return True

    def _reset(self, entry: _Entry) -> str | None:
        """Clean a returned connection; the reason to discard it, or None to keep it."""
        conn = entry.conn
        conn._sp_fresh = 0.0
        pgconn = conn.pgconn
        if conn.closed or pgconn.status != _OK or not conn._sp_state_is_reusable():
            return st.BAD_STATE
        status = pgconn.transaction_status
        if status != _IDLE:
            if status not in _RESETTABLE:
                return st.BAD_STATE  # a query or COPY still running: only closing stops it
            try:
                conn.rollback()
            except psycopg.Error:
                return st.BAD_STATE
            self._stats.add(st.ROLLBACKS)
        try:
            conn._sp_restore(conn._sp_baseline)
        except psycopg.Error:
            return st.BAD_STATE
        if self._discards:
            conn._sp_forget_prepared()
            try:
                _reset.send_reset(pgconn)
            except psycopg.Error:
                return st.RESET_FAILED
            entry.resetting = True
            self._stats.add(st.RESETS)
        return None

    def _discard(self, entry: _Entry, reason: str | None) -> None:
        with self._lock:
            self._entries.discard(entry)
            if reason is not None:
                self._stats.replaced(reason)
            self._stats.add(st.CONNECTIONS_CLOSED)
        if reason is not None:
            logger.info("pool %r: closing a connection (%s)", self.name, reason)
        try:
            entry.conn.close()
        except Exception:
            logger.debug("pool %r: error closing a connection", self.name, exc_info=True)

    def _connect(self, deadline: float) -> PooledConnection[Any]:
        """Open one connection, retrying transient refusals with jittered backoff."""
        settings = self.settings
        attempt = 0
        renewed = False  # new credentials were tried after a rejected login
        while True:
            attempt += 1
            with self._lock:
                self._stats.add(st.CONNECT_ATTEMPTS)
            try:
                conn = self._open()
            except CredentialsUnavailable:
                with self._lock:
                    self._stats.add(st.CONNECT_ERRORS)
                raise
            except psycopg.OperationalError as err:
                if not renewed and self._login_renewed(err):
                    renewed = True
                    continue
                if not is_transient(err):
                    with self._lock:
                        self._stats.add(st.CONNECT_ERRORS)
                    credentials = self._credentials
                    after = "" if credentials is None else f", login from {credentials.description}"
                    if renewed:
                        after += " renewed once"
                    raise ConnectionFailed(
                        f"the pool {self.name!r} could not connect"
                        f" ({failure_kind(err)}{after}, not retried): {_reason(err)}"
                    ) from err
                delay = random.uniform(
                    0, min(settings.retry_backoff_max, settings.retry_backoff * 2 ** (attempt - 1))
                )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    with self._lock:
                        self._stats.add(st.CONNECT_ERRORS)
                        self._stats.add(st.TIMEOUTS)
                    raise PoolTimeout(
                        f"the pool {self.name!r} could not connect before its deadline:"
                        f" the server refused {attempt} attempt(s) ({_reason(err)})"
                    ) from err
                with self._lock:
                    self._stats.add(st.CONNECT_RETRIES)
                logger.info(
                    "pool %r: connection refused (%s); retrying in %.3f s",
                    self.name, _reason(err), min(delay, remaining),
                )  # fmt: skip
                time.sleep(min(delay, remaining))
                continue
            with self._lock:
                self._stats.add(st.CONNECTIONS_OPENED)
            return conn

    def _login_renewed(self, err: psycopg.OperationalError) -> bool:
        """After a rejected login: True if the credential provider has new credentials."""
        credentials = self._credentials
        if credentials is None or not is_login_rejected(err) or not credentials.rejected():
            return False
        logger.info(
            "pool %r: the server rejected the login; trying once more with %s renewed",
            self.name, credentials.description,
        )  # fmt: skip
        return True

    def _open(self) -> PooledConnection[Any]:
        settings = self.settings
        conninfo = self._conninfo() if callable(self._conninfo) else self._conninfo
        params = parse_conninfo(conninfo)
        extra: dict[str, Any] = {
            "autocommit": settings.autocommit,
            "prepare_threshold": settings.prepare_threshold,
        }
        if "connect_timeout" not in params:
            timeout = settings.connect_timeout
            outer = _deadline.current_deadline()
            if outer is not None:
                # A hanging login (a proxy waiting for its server) must not outlast the
                # invocation. libpq waits at least 2 s whatever it is told.
                timeout = min(timeout, outer - time.monotonic())
            extra["connect_timeout"] = max(2, round(timeout))
        if "application_name" not in params:
            extra["application_name"] = settings.application_name
        if self._credentials is not None:
            extra.update(self._credentials.login(params))
        elif self._password is not None:
            extra["password"] = self._password() if callable(self._password) else self._password
        extra.update(silent_server.tcp_params(settings, params))
        extra.update(failover.session_attrs(settings, params))
        if settings.uses_session_state:
            options = _session_options(settings)
            if options:
                extra["options"] = " ".join(
                    filter(None, [str(params.get("options") or ""), options])
                )
        try:
            conn: PooledConnection[Any] = PooledConnection.connect(conninfo, **extra)
        except psycopg.ProgrammingError as err:
            # A bad connection string from a callable: say so without echoing it.
            raise SettingsError(f"conninfo: {_reason(err)}") from None
        except psycopg.OperationalError as err:
            # libpq and psycopg quote parameter values back in their messages; should
            # one of them ever be the password, it must not travel further.
            secret = str(extra.get("password") or params.get("password") or "")
            if secret and secret in str(err):
                raise psycopg.OperationalError(str(err).replace(secret, "…")) from None
            raise
        if not settings.read_only:
            failover.check_writable(conn)
            conn._sp_on_read_only = self._left_read_only_server
        # Set up from the connection arguments: as the pool wants it. What the
        # configure callback sets up too is the baseline every return restores.
        conn.cursor_factory = PooledCursor
        conn.server_cursor_factory = PooledServerCursor
        conn._sp_replace = self._replace_server_connection
        if settings.deadline_function is not None:
            conn._sp_deadline_function = settings.deadline_function.encode()
        if settings.statement_timeout and settings.uses_session_state:
            conn._sp_statement_timeout_ms = max(1, round(settings.statement_timeout * 1000))
        if self._configure is not None:
            self._configure(conn)
        conn._sp_baseline = conn._sp_setup()
        return conn

    def _left_read_only_server(self, conn: PooledConnection[Any]) -> None:
        """A write found the server read-only (25006): close the connection at once, so
        that no later statement of a pool for writes goes to it; the next borrow
        reconnects (to a writable server, with backoff within the deadline)."""
        with self._lock:
            self._stats.add(st.READ_ONLY_ERRORS)
        logger.warning(
            "pool %r: the server is read-only (a failover?); closing the connection", self.name
        )
        with contextlib.suppress(Exception):
            conn.close()

    def _replace_server_connection(self, conn: PooledConnection[Any], reason: str) -> bool:
        """Give a borrowed connection object a new server session (nothing ran on it)."""
        try:
            fresh = self._connect(self._retry_deadline())
        except psycopg.Error:
            logger.warning("pool %r: could not replace a dead connection", self.name)
            return False
        conn._sp_adopt(fresh)
        with self._lock:
            self._stats.replaced(reason)
            self._stats.add(st.STATEMENT_RETRIES)
            self._stats.add(st.CONNECTIONS_CLOSED)  # the dead session, closed by _sp_adopt
            entry = conn._sp_entry
        if entry is not None and entry.owner is self:
            entry.renew(time.monotonic(), self.settings.max_lifetime)
        logger.info("pool %r: replaced a connection before its first statement", self.name)
        return True

    def _retry_deadline(self) -> float:
        deadline = time.monotonic() + self.settings.acquire_timeout
        outer = _deadline.current_deadline()
        return deadline if outer is None else min(deadline, outer)

    def _close_for_shutdown(self) -> None:
        """SIGTERM or exit: close what is idle without waiting for a lock held elsewhere."""
        # The stack is emptied with atomic pops, which need no lock.
        self._closed = True
        for entry in self._take_idle():
            with contextlib.suppress(Exception):
                entry.conn.close()

    def _forget_after_fork(self) -> None:
        """In a forked child: never touch the parent's sockets again."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        entries = list(self._entries)
        self._idle, self._entries = deque(), set()
        self._opening = self._waiting = 0
        self._holding = []
        for entry in entries:
            _disown(entry.conn)


class _Borrow:
    """The context manager `ServerlessPool.connection()` returns."""

    __slots__ = ("_conn", "_pool", "_timeout")

    _conn: PooledConnection[TupleRow]
    _pool: ServerlessPool
    _timeout: float | None

    def __enter__(self) -> PooledConnection[TupleRow]:
        self._conn = conn = self._pool.acquire(self._timeout)
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Leaving the block twice would release twice: the pool refuses that.
        self._pool.release(self._conn)


_new_borrow: Final = object.__new__


def _bounded(seconds: float) -> float:
    """`seconds`, or the time left before the deadline of the work in progress if less."""
    left = _deadline.remaining()
    return seconds if left is None or left > seconds else left


def _disown(conn: PooledConnection[Any]) -> None:
    """Close a connection inherited through fork() without disturbing the parent.

    Closing normally would send the server a Terminate message on the socket the parent
    still uses. Pointing the descriptor at /dev/null first makes that write go nowhere.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    conn._sp_replace = None
    with contextlib.suppress(Exception):
        conn.close()


def _session_options(settings: PoolSettings) -> str:
    """libpq ``options`` that set the pool's server-side timeouts as session defaults.

    Set at startup rather than with SET, they survive ``DISCARD ALL`` and cost no round
    trip.
    """
    parts = []
    for name in (
        "idle_session_timeout",
        "idle_in_transaction_session_timeout",
        "statement_timeout",
    ):
        seconds = getattr(settings, name)
        if seconds:
            parts.append(f"-c {name}={max(1, round(seconds * 1000))}")
    return " ".join(parts)


def _reason(err: BaseException) -> str:
    """The useful part of a libpq error message, on one line."""
    text = str(err).strip()
    for prefix in ("connection failed: ",):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return " ".join(text.split())
