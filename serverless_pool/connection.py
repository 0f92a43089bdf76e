"""The connection class the pool hands out: a psycopg `Connection` that knows its borrow.

Two things need to happen *inside* psycopg's execution path, so they live here:

- Before the first statement of a borrow, the socket is polled once more. If the server
  ended the session since the borrow's check, nothing of the borrow has run yet, so the
  pool swaps a fresh server connection in under the same Python object and the
  statement goes to it. If sending that first statement fails outright (the bytes never
  left), the same swap and one retry happen. A statement that was sent and then lost
  its connection is never retried: it may have run.
- After each statement, its command tag says whether it changed session state (SET,
  temporary tables, LISTEN, PREPARE, advisory locks...), so the pool resets the session
  on return only when needed and keeps the common borrow at zero extra round trips.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from functools import partial
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any
from weakref import ref

import psycopg
from psycopg import IsolationLevel, pq
from psycopg._connection_base import BaseConnection
from psycopg.abc import PQGen
from psycopg.rows import Row

from . import failover
from .liveness import watch_socket

__all__ = [
    "PooledClientCursor",
    "PooledConnection",
    "PooledCursor",
    "PooledCursorMixin",
    "PooledServerCursor",
    "changes_session_state",
]

_IDLE = pq.TransactionStatus.IDLE
_OK = pq.ConnStatus.OK

# Command tags of statements that leave state in the session after they end.
_SESSION_TAGS = (
    b"SET", b"RESET", b"LISTEN", b"PREPARE", b"DECLARE", b"LOAD", b"CREATE", b"DO", b"CALL",
)  # fmt: skip
_SEND_FAILURE = ("sending query", "flushing failed")
#: Seconds after the borrow's liveness check when the first statement checks again.
RECHECK_AFTER = 0.001
_CURSOR_EXECUTE: Any = psycopg.Cursor.execute
_READ_ONLY_SERVER = b"25006"


def changes_session_state(command_status: bytes | None, sent: bytes | None) -> bool:
    """Whether a statement may have left session state behind.

    `command_status` is the tag the server answered; `sent` is the statement text as it
    went to the server. Errs on the side of "yes": that costs one DISCARD ALL.
    """
    if command_status is None:
        return False
    if command_status.startswith(_SESSION_TAGS):
        return True
    # Tagged "SELECT n" but changing the session: advisory locks, set_config(),
    # setseed(), SELECT INTO and CREATE TABLE AS (temporary tables).
    if command_status.startswith(b"SELECT") and sent:
        text = sent.lower()
        # an explicit chain: a generator expression here costs more than the scans
        return (
            b"advisory" in text
            or b"set_config" in text
            or b"setseed" in text
            or b"pg_temp" in text
            or b" into " in text
            or text.lstrip().startswith(b"create")
        )
    return False


# `changes_session_state()` by the query as the app passed it (its text decides the
# command tag too). An app sends the same few queries over and over, the parameters
# apart: a dictionary look-up costs less than reading the tag and scanning the text.
_verdicts: dict[str | bytes, bool] = {}
_MAX_VERDICTS = 512


def _learn_verdict(cursor: Any) -> bool:
    """`changes_session_state()` for the statement `cursor` just ran, remembered."""
    result = cursor.pgresult
    if result is None:
        return False  # no answer yet (pipeline mode): nothing to learn from
    query = cursor._last_query
    # The text as sent; psycopg keeps none for a prepared statement, so that of the
    # app's query then (placeholders differ, the words scanned for do not).
    if isinstance(query, str):
        sent: bytes | None = query.encode()
    elif isinstance(query, bytes):
        sent = query
    else:  # psycopg.sql objects: not a dictionary key
        pgq = cursor._query
        return changes_session_state(result.command_status, None if pgq is None else pgq.query)
    verdict = changes_session_state(result.command_status, sent)
    if len(_verdicts) >= _MAX_VERDICTS:
        _verdicts.clear()  # queries with literals built in: start over
    _verdicts[query] = verdict
    return verdict


class PooledConnection(psycopg.Connection[Row]):
    """A psycopg connection owned by a `ServerlessPool`.

    It behaves exactly like `psycopg.Connection`; the pool-specific attributes are private.
    """

    # Set by the pool: its book-keeping for this connection (a `pool._Entry`).
    _sp_entry: Any = None
    # Set by the pool: replaces the server connection under this object, returns False
    # if it could not.
    _sp_replace: Callable[[PooledConnection[Any], str], bool] | None = None
    # While no statement has been sent in the current borrow: when (time.monotonic())
    # the pool saw the socket quiet. 0.0 otherwise.
    _sp_fresh: float = 0.0
    # A statement of the current borrow changed session state.
    _sp_dirty: bool = False
    # The return must look at the connection before shelving it: the session state or
    # one of psycopg's connection attributes (autocommit, isolation level, read-only,
    # deferrable, prepare threshold) may differ from the pool's, or the pool resets
    # every connection. One flag, so that a clean return reads one attribute.
    _sp_unclean: bool = False
    # Whether statements are watched for session changes (reset_on_return="auto").
    _sp_track: bool = False
    # The query (a str or bytes object) last found to leave the session as it was:
    # running the same object again needs no look-up (see `_sp_direct_execute`).
    _sp_harmless: object = None

    # A poll object on the server connection's socket, made at connect time and again
    # when the server connection is swapped, so a check costs one system call.
    _sp_watch: select.poll | None = None

    def _sp_watch_socket(self) -> None:
        self._sp_watch = watch_socket(self.pgconn.socket)

    def _sp_socket_quiet(self) -> bool:
        """True if libpq thinks the connection is fine and its socket has nothing to read."""
        if self.pgconn.status != _OK:
            return False
        if self._sp_watch is None:
            self._sp_watch_socket()
        assert self._sp_watch is not None
        return not self._sp_watch.poll(0)

    def _sp_first_statement(self) -> None:
        """Before the first statement of a borrow (called while `_sp_fresh` is set)."""
        checked_at, self._sp_fresh = self._sp_fresh, 0.0
        # The borrow's own check is fresh enough when the statement follows at once
        # (the common case): a second poll would only add a system call.
        if _monotonic() - checked_at > RECHECK_AFTER:
            self._sp_recheck()

    def _sp_recheck(self) -> None:
        """Poll the socket again before a borrow's first statement; swap if it died."""
        if (
            self._sp_replace is not None
            and self.pgconn.transaction_status == _IDLE
            and not self._sp_socket_quiet()
        ):
            self._sp_replace(self, "dead_on_first_statement")

    def _sp_may_retry(self, err: psycopg.OperationalError) -> bool:
        """After the first statement failed: swap and retry if it surely never ran."""
        if self._sp_replace is None or self.pgconn.status == pq.ConnStatus.OK:
            return False
        if not str(err).startswith(_SEND_FAILURE):
            return False
        return self._sp_replace(self, "dead_on_first_statement")

    def _sp_adopt(self, other: PooledConnection[Any]) -> None:
        """Take `other`'s server connection; `other` gets ours (dead) and is closed."""
        dead = self.pgconn
        self.pgconn = other.pgconn
        self._sp_watch_socket()
        # psycopg routes notices and notifications through weak references to the
        # owning connection: point them at this object.
        wself: ref[Any] = ref(self)
        self.pgconn.notice_handler = partial(BaseConnection._notice_handler, wself)
        self.pgconn.notify_handler = partial(BaseConnection._notify_handler, wself)
        # The new session has no prepared statements.
        self._prepared.clear()
        other.pgconn = dead
        other.close()

    def _sp_forget_prepared(self) -> None:
        """Forget psycopg's prepared statements: a DISCARD ALL is about to drop them.

        psycopg notices a DISCARD ALL only the first time its text is run, so after a
        few resets it would still use statements the server no longer has. Forgetting
        them first also saves the DEALLOCATE ALL psycopg would send afterwards.
        """
        self._prepared.clear()
        self._prepared._to_flush.clear()

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        if self._sp_fresh:
            self._sp_first_statement()
        return super().transaction(*args, **kwargs)

    # psycopg changes these attributes through these generators (the properties and
    # the set_*() methods alike): a change makes the return look and restore them.

    def _set_autocommit_gen(self, value: bool) -> PQGen[None]:
        self._sp_unclean = True
        return super()._set_autocommit_gen(value)

    def _set_isolation_level_gen(self, value: IsolationLevel | None) -> PQGen[None]:
        self._sp_unclean = True
        return super()._set_isolation_level_gen(value)

    def _set_read_only_gen(self, value: bool | None) -> PQGen[None]:
        self._sp_unclean = True
        return super()._set_read_only_gen(value)

    def _set_deferrable_gen(self, value: bool | None) -> PQGen[None]:
        self._sp_unclean = True
        return super()._set_deferrable_gen(value)

    @property
    def prepare_threshold(self) -> int | None:
        return self._prepared.prepare_threshold

    @prepare_threshold.setter
    def prepare_threshold(self, value: int | None) -> None:
        self._sp_unclean = True
        self._prepared.prepare_threshold = value

    # -- failover (issue 15): see `serverless_pool.failover` -------------------------
    # While a deadline is active, `serverless_pool.silent_server` bounds wait() here.

    # Set by a pool for writes: called when a statement found the server read-only.
    _sp_on_read_only: Callable[[PooledConnection[Any]], None] | None = None

    def _exec_command(self, command: Any, result_format: pq.Format = pq.Format.TEXT) -> Any:
        gen = super()._exec_command(command, result_format)
        return failover.watch_commit(self, gen) if command == b"COMMIT" else gen


class PooledCursorMixin:
    """Hooks the pool needs in a cursor; mix it in front of any psycopg cursor class."""

    if TYPE_CHECKING:
        _pgconn: pq.abc.PGconn
        _conn: Any
        _query: Any
        _last_query: Any
        pgresult: pq.abc.PGresult | None

    def _sp_sync(self) -> bool:
        """Prepare for a statement; True if it is the first of the borrow."""
        conn = self._conn
        fresh = bool(conn._sp_fresh)
        if fresh:
            conn._sp_first_statement()
        if self._pgconn is not conn.pgconn:
            self._pgconn = conn.pgconn
        return fresh

    def _sp_track(self) -> None:
        """After a statement: mark the session for a reset if the statement changed it."""
        conn = self._conn
        if conn._sp_track and not conn._sp_dirty:
            query = self._last_query
            try:
                verdict = _verdicts.get(query)
            except TypeError:  # a psycopg.sql object
                verdict = None
            if verdict is None:
                verdict = _learn_verdict(self)
            if verdict:
                conn._sp_dirty = conn._sp_unclean = True
            elif type(query) is str or type(query) is bytes:  # immutable, so still harmless
                conn._sp_harmless = query

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The hot path: when the execute() after this mixin is psycopg's own (Cursor,
        # ClientCursor, Django's cursors) and nothing in front overrides it, statements
        # go through `_sp_direct_execute`, which calls psycopg's directly with its
        # arguments spelled out. Forwarding *args/**kwargs through super() costs a few
        # µs per statement once the interpreter's caches went cold waiting for the
        # server, about as much as the pool's whole borrow.
        mro = cls.__mro__
        after = mro[mro.index(PooledCursorMixin) + 1 :]
        following = next((k.__dict__["execute"] for k in after if "execute" in k.__dict__), None)
        if following is _CURSOR_EXECUTE and cls.execute is PooledCursorMixin.execute:
            cls.execute = PooledCursorMixin._sp_direct_execute  # type: ignore[method-assign]

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._sp_hooked(super().execute, query, args, kwargs)  # type: ignore[misc]

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._sp_hooked(super().executemany, query, args, kwargs)  # type: ignore[misc]

    def _sp_hooked(
        self, run: Callable[..., Any], query: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a statement through `run` with the pool's hooks around it."""
        fresh = self._sp_sync()
        try:
            rv = run(query, *args, **kwargs)
        except psycopg.OperationalError as err:
            if not (fresh and self._conn._sp_may_retry(err)):
                raise
            self._sp_sync()
            rv = run(query, *args, **kwargs)
        self._sp_track()
        return rv

    def _sp_direct_execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Any:
        """`_sp_hooked()` around psycopg's `Cursor.execute`, its arguments spelled out.

        The hooks are written out rather than called (`_sp_sync()`, the clock test of
        `_sp_first_statement()`, `_sp_track()`): the interpreter's caches have gone cold
        waiting for the server's last answer, and each call frame and dictionary
        look-up then costs a few hundred ns. Written out, with the look-up skipped for
        a query seen before, the hooks of a borrow's first statement cost about half.
        """
        conn = self._conn
        checked_at = conn._sp_fresh
        if checked_at:
            conn._sp_fresh = 0.0
            if _monotonic() - checked_at > RECHECK_AFTER:
                conn._sp_recheck()
        if self._pgconn is not conn.pgconn:
            self._pgconn = conn.pgconn
        try:
            _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)
        except psycopg.OperationalError as err:
            if not (checked_at and conn._sp_may_retry(err)):
                raise
            self._pgconn = conn.pgconn
            _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)
        # An app runs the same query objects over and over: the one last seen harmless
        # needs no look-up.
        if query is not conn._sp_harmless:
            self._sp_track()
        return self

    def _raise_for_result(self, result: Any) -> Any:
        # psycopg's way out for a failed statement: nothing on the success path. A write
        # that found the server read-only (failover) must not leave the connection in use.
        if result.error_field(pq.DiagnosticField.SQLSTATE) == _READ_ONLY_SERVER:
            failover.found_read_only(self._conn)
        return super()._raise_for_result(result)  # type: ignore[misc]

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        self._sp_sync()
        # COPY FROM/TO temporary tables and the like are tracked by their CREATE.
        return super().copy(*args, **kwargs)  # type: ignore[misc]

    def stream(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._sp_sync()
        return super().stream(query, *args, **kwargs)  # type: ignore[misc]


class PooledCursor(PooledCursorMixin, psycopg.Cursor[Row]):
    """psycopg's default (server-side binding) cursor, with the pool's hooks."""


class PooledClientCursor(PooledCursorMixin, psycopg.ClientCursor[Row]):
    """psycopg's client-side binding cursor, with the pool's hooks."""


class PooledServerCursor(PooledCursorMixin, psycopg.ServerCursor[Row]):
    """psycopg's named (server-side) cursor, with the pool's hooks."""
