"""The connection class the pool hands out: a psycopg `Connection` that knows its borrow.

Two things need to happen inside psycopg's execution path, so they live here, and this
module is the one place that touches psycopg's private attributes (a test pins each):

- **The borrow's first operation is retried when it surely committed nothing.** If the
  server ended the session just before the borrow's first statement (an idle timeout
  firing at the thaw, an administrator ending backends), the statement fails although
  the server never executed it. Before sending it, when more than `RECHECK_AFTER` passed
  since the borrow's check, the socket is looked at once more, and a session that ended
  is swapped for a fresh one under the same Python object. After sending it, the same
  swap and one retry happen when the bytes never left (the send failed), or when the
  first answer of the operation is the server's notice that it ended the session:
  idle-session timeout (57P05: only an idle backend gets it), or an administrator
  command or another backend's crash (57P01, 57P02) arriving within `RETRY_WINDOW` of
  the send. The server sends a statement's CommandComplete before it commits it, so an
  operation whose first answer is that notice committed nothing; the window keeps a
  statement that an operator stopped after it ran for a while from running again. An
  operation that received any answer first, or that lost its connection with no notice
  at all (a bare EOF), is never retried: it may have run.
- **The borrow's first statement goes behind the reset.** When a connection is lent
  before the answer to its reset came back (`serverless_pool.reset`; a borrow right after
  the return), the first statement is sent at once behind the reset, in the same pipeline,
  and both answers are read in one round trip; the reset's answer is then the borrow's
  check: a session that ended answers it with its goodbye, and the statement, which the
  server never reached, runs on a fresh session. Only one plain statement goes behind the
  reset (one statement, autocommit, nothing to prepare); anything else first waits for
  the reset's answer (`_sp_settle`).
- **Python-side state is restored on return.** psycopg keeps session attributes on the
  connection object (autocommit, isolation level, read-only, deferrable, prepared
  statement settings, row and cursor factories, adapters, notice and notify handlers,
  pending notifications). The pool takes a `Baseline` when a connection is set up, and
  every change to it either flags the connection (`_sp_unclean`) as it happens or is
  compared by identity when the connection comes back; the return then restores it.

`serverless_pool.statement_deadline` also hooks into psycopg's execution path (the
transaction's BEGIN and the send of a statement), installed only once a process turns
the deadline bound on; it owns the private attributes it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Final
from weakref import ref

import psycopg
from psycopg import IsolationLevel, pq
from psycopg._connection_base import BaseConnection
from psycopg.abc import PQGen
from psycopg.adapt import AdaptersMap
from psycopg.errors import Diagnostic
from psycopg.generators import fetch_many as _fetch_many
from psycopg.generators import send as _send
from psycopg.rows import Row

from . import failover
from . import reset as _reset
from .liveness import watch_socket

__all__ = [
    "RECHECK_AFTER",
    "RETRY_WINDOW",
    "TERMINATION_SQLSTATES",
    "Baseline",
    "PooledClientCursor",
    "PooledConnection",
    "PooledCursor",
    "PooledCursorMixin",
    "PooledRawCursor",
    "PooledServerCursor",
]

_IDLE = pq.TransactionStatus.IDLE
_OK = pq.ConnStatus.OK

#: The server's notices that it ended the session: administrator command (also a fast
#: shutdown), crash of another server process, idle-session timeout.
TERMINATION_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P05"})
_IDLE_TIMEOUT: Final = "57P05"
#: Seconds after the borrow's check when the first statement checks the socket again.
RECHECK_AFTER: Final = 0.001
#: Seconds after the send within which the server's 57P01/57P02 goodbye still counts as
#: the end of an idle session rather than the stop of a statement that was running.
RETRY_WINDOW: Final = 0.1
# psycopg's messages for a send that failed: the bytes never (all) left.
_SEND_FAILURES: Final = ("sending ", "flushing failed")
_CURSOR_EXECUTE: Any = psycopg.Cursor.execute
_BASE_WAIT: Any = psycopg.Connection.wait
_WAIT_INTERVAL: Final = 0.1  # psycopg's own
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FORMATS: Final = {True: pq.Format.BINARY, False: pq.Format.TEXT}
# Statements that may go behind the reset: one of these, as the text's first word.
_BEHIND_RESET_WORDS: Final = ("select", "insert", "update", "delete", "with", "values", "table")

_READ_ONLY_SERVER = b"25006"


class Baseline:
    """The Python-side state of a connection as the pool set it up, to restore on return."""

    __slots__ = (
        "adapters",
        "autocommit",
        "cursor_factory",
        "notice_handlers",
        "notify_handlers",
        "prepare_threshold",
        "prepared_max",
        "row_factory",
        "server_cursor_factory",
    )

    def __init__(self, conn: PooledConnection[Any]) -> None:
        self.autocommit = conn.autocommit
        self.row_factory = conn.row_factory
        self.cursor_factory = conn.cursor_factory
        self.server_cursor_factory = conn.server_cursor_factory
        self.prepare_threshold = conn.prepare_threshold
        self.prepared_max = conn._prepared.prepared_max
        self.notice_handlers = tuple(conn._notice_handlers)
        self.notify_handlers = tuple(conn._notify_handlers)
        # A map of the connection's own whose changes flag the connection: registering
        # an adapter on `conn.adapters` is the one change made inside an object.
        self.adapters = conn.adapters
        conn._adapters = _WatchedAdaptersMap(conn, self.adapters)


class _WatchedTypes:
    """Marks the connection unclean when a type is registered on its adapters."""

    # Wraps psycopg's TypesRegistry (whose add() a TypeInfo.register() calls).
    def __init__(self, conn: PooledConnection[Any], registry: Any) -> None:
        self._conn = ref(conn)
        self._registry = registry

    def add(self, info: Any) -> None:
        conn = self._conn()
        if conn is not None:
            conn._sp_unclean = True
        self._registry.add(info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._registry)

    def __getitem__(self, key: Any) -> Any:
        return self._registry[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._registry


class _WatchedAdaptersMap(AdaptersMap):
    """A copy-on-write child of the baseline map that flags the connection on change."""

    def __init__(self, conn: PooledConnection[Any], template: AdaptersMap) -> None:
        super().__init__(template)
        self._sp_conn = ref(conn)
        self.types = _WatchedTypes(conn, self.types)  # type: ignore[assignment]

    def _sp_touched(self) -> None:
        conn = self._sp_conn()
        if conn is not None:
            conn._sp_unclean = True

    def register_dumper(self, cls: Any, dumper: Any) -> None:
        self._sp_touched()
        super().register_dumper(cls, dumper)

    def register_loader(self, oid: Any, loader: Any) -> None:
        self._sp_touched()
        super().register_loader(oid, loader)


class _GoodbyeWatch:
    """A notice handler noting the server's goodbye when it arrives between statements.

    libpq hands an error that arrives while no statement runs to the notice handlers;
    the session is over even though libpq still reports the connection as OK.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: PooledConnection[Any]) -> None:
        self._conn = ref(conn)

    def __call__(self, diag: Diagnostic) -> None:
        if diag.sqlstate in TERMINATION_SQLSTATES:
            conn = self._conn()
            if conn is not None:
                conn._sp_terminated = conn._sp_look_again = True


class PooledConnection(psycopg.Connection[Row]):
    """A psycopg connection owned by a `ServerlessPool`.

    It behaves exactly like `psycopg.Connection`; the pool-specific attributes are private.
    """

    # Set by the pool: its book-keeping for this connection (a `pool._Entry`).
    _sp_entry: Any = None
    # Set by the pool: replaces the server connection under this object, returns False
    # if it could not.
    _sp_replace: Callable[[PooledConnection[Any], str], bool] | None = None
    # From the lend until the borrow's first operation starts: when (time.monotonic())
    # the pool last saw the session alive. 0.0 otherwise. Negative: lent before the
    # answer to its reset came (the connection is in pipeline mode, and the borrow's
    # first operation reads that answer; see the module's doc).
    _sp_fresh: float = 0.0
    # The server's goodbye arrived between statements (see `_GoodbyeWatch`).
    _sp_terminated: bool = False
    # Set up by `_sp_setup()`: the Python-side state every return restores.
    _sp_baseline: Baseline
    # The return must restore Python-side state: one of psycopg's connection attributes
    # or the adapters changed. One flag, so that a clean return reads one attribute.
    _sp_unclean: bool = False

    # A poll object on the server connection's socket, made at connect time and again
    # when the server connection is swapped, so a check costs one system call.
    _sp_watch: Any = None
    # The session runs over TLS (libpq then reads one TLS record at a time).
    _sp_tls: bool = False
    # The borrow must look beyond the answer to the reset: the session runs over TLS, or
    # the server said goodbye. One flag, so the common borrow reads one attribute.
    _sp_look_again: bool = False

    def _sp_setup(self) -> Baseline:
        """After the pool configured the connection: watch it, and take its baseline."""
        self._sp_watch = watch_socket(self.pgconn.socket)
        # Set on the object, not left to the class defaults: the interpreter reads an
        # object's own attributes fastest, and the borrow reads these every time.
        self._sp_tls = self._sp_look_again = bool(self.pgconn.ssl_in_use)
        self._sp_terminated = False
        self.add_notice_handler(_GoodbyeWatch(self))
        baseline = Baseline(self)
        self._sp_unclean = False
        return baseline

    def _sp_socket_quiet(self) -> bool:
        """True if libpq thinks the connection is fine and its socket has nothing to read."""
        if self.pgconn.status != _OK or self._sp_terminated:
            return False
        return not self._sp_watch.poll(0)

    # -- the borrow's first operation --------------------------------------------------

    def _sp_start_first(self) -> float:
        """The borrow's first operation begins: re-check a stale check; the start time."""
        checked_at, self._sp_fresh = self._sp_fresh, 0.0
        if checked_at < 0:
            self._sp_settle()
            self._sp_fresh = 0.0
            return _monotonic()
        started = _monotonic()
        # The borrow's own check is fresh enough when the statement follows at once
        # (the common case): a second look would only add a system call.
        if started - checked_at > RECHECK_AFTER:
            self._sp_recheck()
        return started

    def _sp_settle(self, replace: bool = True) -> None:
        """Wait for the answer to the reset this connection was lent before.

        A session that did not answer it well ended (or stopped answering) before the
        borrow sent anything: with `replace`, a fresh one takes its place. Without (inside
        psycopg's wait(), which watches the old socket), the error is raised.
        """
        self._sp_fresh = _monotonic()  # the answer, or a new session, is the check
        owner = self._sp_entry.owner
        outcome = _reset.wait_reset(self.pgconn, owner.settings.ping_timeout)
        if outcome == _reset.DONE and not self._sp_terminated:
            if self._notifies_backlog:
                self._notifies_backlog.clear()  # sent before the UNLISTEN
            return
        if replace and self._sp_swap():
            return
        self._sp_fresh = 0.0
        raise psycopg.OperationalError(
            "the server session ended before the borrow's first statement"
            " (no good answer to the reset on return)"
        )

    def _sp_recheck(self) -> None:
        """Look at the socket again; swap the session if it ended meanwhile."""
        pgconn = self.pgconn
        if self._sp_replace is None or pgconn.transaction_status != _IDLE:
            return
        if pgconn.status == _OK and not self._sp_terminated and not self._sp_watch.poll(0):
            return
        try:
            pgconn.consume_input()
            pgconn.is_busy()  # libpq parses here: a goodbye goes to the notice handlers
        except psycopg.OperationalError:
            pass
        if pgconn.status != _OK or self._sp_terminated:
            self._sp_swap()

    def _sp_never_ran(
        self, err: psycopg.OperationalError, started: float, one_statement: bool
    ) -> bool:
        """After the borrow's first operation failed: whether it surely committed nothing.

        `one_statement`: the operation was one statement, so an answer of the server
        cannot have come before the goodbye (several statements in one text could have
        been answered, and committed, one by one).
        """
        if self._sp_replace is None or self.pgconn.status == _OK:
            return False
        if str(err).startswith(_SEND_FAILURES) or self._sp_terminated:
            # The bytes never left, or the goodbye came before them (libpq takes an
            # error that arrives while nothing of ours is pending for a notice).
            return True
        state = err.sqlstate
        if state == _IDLE_TIMEOUT:  # only a backend waiting for a statement times out
            return True
        return (
            one_statement
            and state in TERMINATION_SQLSTATES
            and _monotonic() - started <= RETRY_WINDOW
        )

    def _sp_retry_first(
        self, err: psycopg.OperationalError, started: float, one_statement: bool = True
    ) -> bool:
        """Swap in a fresh server session if the failed first operation never ran."""
        return self._sp_never_ran(err, started, one_statement) and self._sp_swap()

    def _sp_swap(self) -> bool:
        """Put a fresh server session under this object, before the borrow's first operation."""
        assert self._sp_replace is not None
        pipeline = self._pipeline
        if not self._sp_replace(self, "dead_on_first_statement"):
            return False
        if pipeline is not None:
            # Nothing was queued in this pipeline before the first operation (see
            # `PooledCursorMixin._sp_first`): the fresh session takes the dead one's place.
            pipeline.pgconn = self.pgconn
            pipeline.command_queue.clear()
            pipeline.result_queue.clear()
            self.pgconn.enter_pipeline_mode()
        return True

    def _sp_adopt(self, other: PooledConnection[Any]) -> None:
        """Take `other`'s server connection; `other` gets ours (dead) and is closed."""
        dead = self.pgconn
        self.pgconn = other.pgconn
        self._sp_watch = watch_socket(self.pgconn.socket)
        self._sp_tls = self._sp_look_again = bool(self.pgconn.ssl_in_use)
        self._sp_terminated = False
        # psycopg routes notices and notifications through weak references to the
        # owning connection: point them at this object.
        wself: ref[Any] = ref(self)
        self.pgconn.notice_handler = partial(BaseConnection._notice_handler, wself)
        self.pgconn.notify_handler = partial(BaseConnection._notify_handler, wself)
        # The new session has no prepared statements, and no transaction block.
        self._sp_forget_prepared()
        self._num_transactions = 0
        other.pgconn = dead
        other.close()

    @contextmanager
    def _sp_first_transaction(
        self, savepoint_name: str | None, force_rollback: bool
    ) -> Iterator[psycopg.Transaction]:
        """`transaction()` as the borrow's first operation: its BEGIN may be retried."""
        started = self._sp_start_first()
        tx = psycopg.Transaction(self, savepoint_name, force_rollback)
        try:
            tx.__enter__()
        except psycopg.OperationalError as err:
            if not self._sp_retry_first(err, started):
                raise
            tx = psycopg.Transaction(self, savepoint_name, force_rollback)
            tx.__enter__()
        try:
            yield tx
        except BaseException as exc:
            if not tx.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            tx.__exit__(None, None, None)

    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Any:
        if self._sp_fresh and self._pipeline is None:
            return self._sp_first_transaction(savepoint_name, force_rollback)
        return super().transaction(savepoint_name, force_rollback)

    # -- Python-side state -------------------------------------------------------------

    def _sp_forget_prepared(self) -> None:
        """Forget psycopg's prepared statements: the server session no longer has them.

        Emptying psycopg's cache directly also spares the DEALLOCATE ALL it would send.
        """
        prepared = self._prepared
        if prepared._names or prepared._counts:
            prepared._names.clear()
            prepared._counts.clear()
            prepared._to_flush.clear()

    def _sp_is_clean(self, baseline: Baseline) -> bool:
        """Whether the Python-side state is the baseline's (the cheap test on return)."""
        return (
            not self._sp_unclean
            and self.cursor_factory is baseline.cursor_factory
            and self.row_factory is baseline.row_factory
            and self.server_cursor_factory is baseline.server_cursor_factory
            and not self._notifies_backlog
        )

    def _sp_restore(self, baseline: Baseline) -> None:
        """Put every Python-side attribute back as the baseline has it (connection idle)."""
        if self.autocommit is not baseline.autocommit:
            self.autocommit = baseline.autocommit
        if self.isolation_level is not None:
            self.isolation_level = None
        if self.read_only is not None:
            self.read_only = None
        if self.deferrable is not None:
            self.deferrable = None
        self._prepared.prepare_threshold = baseline.prepare_threshold
        self._prepared.prepared_max = baseline.prepared_max
        self.row_factory = baseline.row_factory
        self.cursor_factory = baseline.cursor_factory
        self.server_cursor_factory = baseline.server_cursor_factory
        self._notice_handlers[:] = baseline.notice_handlers
        self._notify_handlers[:] = baseline.notify_handlers
        if self._notifies_backlog:
            self._notifies_backlog.clear()
        adapters = self._adapters
        if not isinstance(adapters, _WatchedAdaptersMap) or adapters._sp_conn() is not self:
            self._adapters = _WatchedAdaptersMap(self, baseline.adapters)
        elif self._sp_unclean:
            # Something may have been registered: start again from the baseline.
            self._adapters = _WatchedAdaptersMap(self, baseline.adapters)
        self._sp_unclean = False

    def _sp_state_is_reusable(self) -> bool:
        """Whether psycopg's own state can be restored, rather than the connection closed."""
        return self._tpc is None and self._pipeline is None and not self._num_transactions

    # psycopg changes these attributes through these generators (the properties and
    # the set_*() methods alike): a change makes the return look and restore them.

    def _set_autocommit_gen(self, value: bool) -> PQGen[None]:
        self._sp_unclean = True
        if self._sp_fresh < 0:  # psycopg reads the transaction status
            self._sp_settle()
        return super()._set_autocommit_gen(value)

    def _set_isolation_level_gen(self, value: IsolationLevel | None) -> PQGen[None]:
        self._sp_unclean = True
        if self._sp_fresh < 0:
            self._sp_settle()
        return super()._set_isolation_level_gen(value)

    def _set_read_only_gen(self, value: bool | None) -> PQGen[None]:
        self._sp_unclean = True
        if self._sp_fresh < 0:
            self._sp_settle()
        return super()._set_read_only_gen(value)

    def _set_deferrable_gen(self, value: bool | None) -> PQGen[None]:
        self._sp_unclean = True
        if self._sp_fresh < 0:
            self._sp_settle()
        return super()._set_deferrable_gen(value)

    @property
    def prepare_threshold(self) -> int | None:
        return self._prepared.prepare_threshold

    @prepare_threshold.setter
    def prepare_threshold(self, value: int | None) -> None:
        self._sp_unclean = True
        self._prepared.prepare_threshold = value

    @property
    def prepared_max(self) -> int | None:
        return self._prepared.prepared_max

    @prepared_max.setter
    def prepared_max(self, value: int | None) -> None:
        self._sp_unclean = True
        BaseConnection.prepared_max.fset(self, value)  # type: ignore[attr-defined]

    def add_notice_handler(self, callback: Callable[[Diagnostic], None]) -> None:
        self._sp_unclean = True
        super().add_notice_handler(callback)

    def remove_notice_handler(self, callback: Callable[[Diagnostic], None]) -> None:
        self._sp_unclean = True
        super().remove_notice_handler(callback)

    def add_notify_handler(self, callback: Callable[[psycopg.Notify], None]) -> None:
        self._sp_unclean = True
        super().add_notify_handler(callback)

    def remove_notify_handler(self, callback: Callable[[psycopg.Notify], None]) -> None:
        self._sp_unclean = True
        super().remove_notify_handler(callback)

    def tpc_begin(self, xid: psycopg.Xid | str) -> None:
        self._sp_unclean = True
        if self._sp_fresh < 0:
            self._sp_settle()
        super().tpc_begin(xid)

    # Operations that use the session outside the first-statement hooks: the reset's
    # answer comes first.

    @property
    def info(self) -> psycopg.ConnectionInfo:
        # libpq reports the session ACTIVE until the reset's answer is read
        if self._sp_fresh < 0:
            self._sp_settle()
        return super().info

    def pipeline(self) -> Any:
        if self._sp_fresh < 0:
            self._sp_settle()
        return super().pipeline()

    def notifies(self, *, timeout: float | None = None, stop_after: int | None = None) -> Any:
        if self._sp_fresh < 0:
            self._sp_settle()
        return super().notifies(timeout=timeout, stop_after=stop_after)

    # -- failover (issue 15): see `serverless_pool.failover` -------------------------
    # While a deadline is active, `serverless_pool.silent_server` bounds wait() here.

    # Set by a pool for writes: called when a statement found the server read-only.
    _sp_on_read_only: Callable[[PooledConnection[Any]], None] | None = None

    # Set by the pool from its ``deadline_function`` setting: the SQL function that sets
    # the statement's bound (`serverless_pool.statement_deadline`), instead of SET LOCAL.
    _sp_deadline_function: bytes | None = None
    # Set by the pool from its ``statement_timeout`` setting (direct mode), in ms: the
    # deadline's bound never exceeds it. PostgreSQL's largest value otherwise.
    _sp_statement_timeout_ms: int = 2**31 - 1

    def _exec_command(self, command: Any, result_format: pq.Format = pq.Format.TEXT) -> Any:
        gen = super()._exec_command(command, result_format)
        return failover.watch_commit(self, gen) if command == b"COMMIT" else gen


class PooledCursorMixin:
    """Hooks the pool needs in a cursor; mix it in front of any psycopg cursor class.

    Statements run exactly as psycopg runs them; the borrow's first one goes through
    `_sp_first`, which retries it once when it surely never ran.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        _pgconn: pq.abc.PGconn
        _conn: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The hot path: when the execute() after this mixin is psycopg's own (Cursor,
        # ClientCursor, Django's cursors) and nothing in front overrides it, statements
        # go through `_sp_direct_execute`, which calls psycopg's directly with its
        # arguments spelled out: forwarding *args/**kwargs through super() costs more
        # than the rest of the hook.
        mro = cls.__mro__
        after = mro[mro.index(PooledCursorMixin) + 1 :]
        following = next((k.__dict__["execute"] for k in after if "execute" in k.__dict__), None)
        if following is _CURSOR_EXECUTE and cls.execute is PooledCursorMixin.execute:
            cls.execute = PooledCursorMixin._sp_direct_execute  # type: ignore[method-assign]

    def _sp_direct_execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Any:
        """psycopg's `Cursor.execute`, the borrow's first statement retried if it never ran.

        `_sp_first()` written out: this runs for every statement of Django's, Flask's
        and plain code, and each call frame saved counts.
        """
        conn = self._conn
        checked_at = conn._sp_fresh
        if checked_at:
            conn._sp_fresh = 0.0
            pipeline = conn._pipeline
            if pipeline is None or not (pipeline.command_queue or pipeline.result_queue):
                if checked_at < 0:
                    if _fits_behind_reset(self, query, prepare, binary):
                        return self._sp_execute_behind_reset(query, params, binary)
                    conn._sp_settle()
                    conn._sp_fresh = 0.0
                    started = _monotonic()
                else:
                    started = _monotonic()
                    if started - checked_at > RECHECK_AFTER:
                        conn._sp_recheck()
                self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
                try:
                    return _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)
                except psycopg.OperationalError as err:
                    if not conn._sp_retry_first(err, started, _one_statement(self)):
                        raise
                self._pgconn = conn.pgconn  # type: ignore[misc]
                return _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)
        elif self._pgconn is not conn.pgconn:  # a cursor kept across a swapped session
            self._pgconn = conn.pgconn  # type: ignore[misc]
        return _CURSOR_EXECUTE(self, query, params, prepare=prepare, binary=binary)

    def _sp_execute_behind_reset(self, query: Any, params: Any, binary: bool | None) -> Any:
        """The borrow's first statement, sent behind the reset whose answer is still to come."""
        conn = self._conn
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        started = _monotonic()  # the caller cleared the mark: wait() leaves the answer to this
        try:
            with conn.lock:
                conn.wait(self._sp_behind_reset_gen(query, params, binary))
            return self
        except _SessionEndedFirst:
            # The server never reached the statement: it runs on a fresh session.
            if not conn._sp_swap():
                raise psycopg.OperationalError(
                    "the server session ended before the borrow's first statement,"
                    " and no new one could be opened"
                ) from None
        except psycopg.OperationalError as err:
            if not conn._sp_retry_first(err, started, True):
                raise
        self._pgconn = conn.pgconn  # type: ignore[misc]
        return _CURSOR_EXECUTE(self, query, params, binary=binary)

    def _sp_behind_reset_gen(self, query: Any, params: Any, binary: bool | None) -> PQGen[None]:
        """psycopg's execution of one statement (``Cursor._execute_gen`` with nothing to
        prepare), sent in the pipeline that holds the reset, each ended by its Sync."""
        conn = self._conn
        pgconn = self._pgconn
        try:
            yield from self._start_query(query)  # type: ignore[attr-defined]
            pgq = self._convert_query(query, params)  # type: ignore[attr-defined]
        except BaseException:
            conn._sp_fresh = -_monotonic()  # nothing sent: the next operation reads the answer
            raise
        self._query = pgq  # type: ignore[misc]
        if isinstance(self, psycopg.ClientCursor):
            # the text has the parameters in it; one statement, so the extended protocol
            # answers as the simple one would
            pgconn.send_query_params(pgq.query, None)
        else:
            fmt = self.format if binary is None else _FORMATS[binary]  # type: ignore[attr-defined]
            pgconn.send_query_params(
                pgq.query,
                pgq.params,
                param_formats=pgq.formats,
                param_types=pgq.types,
                result_format=fmt,
            )
        pgconn.pipeline_sync()
        yield from _send(pgconn)
        reset = yield from _fetch_many(pgconn)
        if reset and reset[0].status == _COMMAND_OK:
            reset = yield from _fetch_many(pgconn)  # the reset's Sync
            ok = bool(reset) and reset[0].status == _PIPELINE_SYNC
        else:
            ok = False
        if not ok:
            # The goodbye of a session that ended while idle (before the reset, or before
            # its Sync), or a failed reset (the server then skips the rest of the
            # pipeline): the server never reached the statement.
            raise _SessionEndedFirst
        if conn._notifies_backlog:
            conn._notifies_backlog.clear()  # sent before the UNLISTEN
        results = yield from _fetch_many(pgconn)
        try:
            yield from _fetch_many(pgconn)  # the statement's Sync
            pgconn.exit_pipeline_mode()
        except psycopg.OperationalError:
            # The session ended after the statement's answer: report the statement's
            # error if it had one, the lost connection otherwise.
            if not any(result.status == _FATAL_ERROR for result in results):
                raise
        self._check_results(results)  # type: ignore[attr-defined]
        self._set_results(results)  # type: ignore[attr-defined]
        self._last_query = query  # type: ignore[misc]
        yield from conn._prepared.maintain_gen(conn)

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        run = super().execute  # type: ignore[misc]
        return self._sp_run(lambda: run(query, *args, **kwargs), True)

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        # Several statements: their answers may come, and commit, one by one.
        run = super().executemany  # type: ignore[misc]
        return self._sp_run(lambda: run(query, *args, **kwargs), False)

    def _sp_run(self, operation: Callable[[], Any], one_statement: bool) -> Any:
        conn = self._conn
        if conn._sp_fresh:
            return self._sp_first(operation, one_statement)
        if self._pgconn is not conn.pgconn:
            self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        return operation()

    def _sp_first(self, operation: Callable[[], Any], one_statement: bool = True) -> Any:
        """Run the borrow's first operation; once more on a fresh session if it never ran."""
        conn = self._conn
        if _queued_before(conn):
            conn._sp_fresh = 0.0
            return operation()
        started = conn._sp_start_first()
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        try:
            return operation()
        except psycopg.OperationalError as err:
            if not conn._sp_retry_first(err, started, one_statement and _one_statement(self)):
                raise
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        return operation()

    def _raise_for_result(self, result: Any) -> Any:
        # psycopg's way out for a failed statement: nothing on the success path. A write
        # that found the server read-only (failover) must not leave the connection in use.
        if result.error_field(pq.DiagnosticField.SQLSTATE) == _READ_ONLY_SERVER:
            failover.found_read_only(self._conn)
        return super()._raise_for_result(result)  # type: ignore[misc]

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        conn = self._conn
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        parent = super().copy  # type: ignore[misc]
        if not conn._sp_fresh:
            return parent(*args, **kwargs)
        return self._sp_first_context(lambda: parent(*args, **kwargs))

    @contextmanager
    def _sp_first_context(self, make: Callable[[], Any]) -> Iterator[Any]:
        """A context manager whose entering is the borrow's first operation."""
        entered: list[Any] = []

        def enter() -> Any:
            manager = make()  # a new one for a retry: a failed one cannot be entered again
            value = manager.__enter__()
            entered.append(manager)
            return value

        value = self._sp_first(enter)
        manager = entered[-1]
        try:
            yield value
        except BaseException as exc:
            if not manager.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            manager.__exit__(None, None, None)

    def stream(self, query: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        conn = self._conn
        self._pgconn = conn.pgconn  # type: ignore[misc]  # a slot of psycopg's cursors
        parent = super().stream  # type: ignore[misc]
        if not conn._sp_fresh:
            return parent(query, *args, **kwargs)  # type: ignore[no-any-return]
        return self._sp_first_stream(lambda: parent(query, *args, **kwargs))

    def _sp_first_stream(self, make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        started: list[Iterator[Any]] = []

        def start() -> Any:
            rows = make()  # a new generator for a retry
            started.append(rows)
            return next(rows, _DONE)

        first = self._sp_first(start)
        if first is _DONE:
            return
        yield first
        yield from started[-1]


_DONE: Final = object()


def settling_wait(
    self: PooledConnection[Any],
    gen: PQGen[Any],
    interval: float = _WAIT_INTERVAL,
    timeout: float | None = None,
) -> Any:
    """`PooledConnection.wait` once a connection was lent before its reset's answer.

    Every exchange with the server goes through wait(), so a cursor psycopg made without
    the pool's hooks (``psycopg.Cursor(conn)``) cannot take the reset's answer for its
    own: the generator has not started, and the answer is read first. The session is not
    replaced here: such a cursor holds on to the old one.
    """
    if self._sp_fresh < 0:
        self._sp_settle(replace=False)
    if timeout is None:
        return _BASE_WAIT(self, gen, interval)
    return _BASE_WAIT(self, gen, interval, timeout)


def lend_behind_reset() -> None:
    """Called by the pool before it first lends a connection whose reset is unanswered.

    Until then psycopg's own wait() runs, not one call more per statement (a pool that
    always finds the answer in, as on Lambda, never pays for it). The silent server's
    bounded wait, once installed, does the same check itself.
    """
    if PooledConnection.__dict__.get("wait") is None:
        PooledConnection.wait = settling_wait  # type: ignore[method-assign,assignment]


class _SessionEndedFirst(Exception):
    """The reset's answer says the session ended before the statement behind it."""


def _fits_behind_reset(cursor: Any, query: Any, prepare: bool | None, binary: bool | None) -> bool:
    """Whether the borrow's first statement may go behind the reset: one plain statement
    (extended protocol, which a pipeline needs, takes one), in autocommit, not prepared."""
    conn = cursor._conn
    if (
        type(query) is not str
        or ";" in query
        or prepare
        or conn._prepared.prepare_threshold is not None
        or not conn._autocommit
        or (binary and isinstance(cursor, psycopg.ClientCursor))
    ):
        return False
    return query.lstrip()[:6].lower().startswith(_BEHIND_RESET_WORDS)


def _queued_before(conn: PooledConnection[Any]) -> bool:
    """Whether something else went into the connection's pipeline before this operation:
    then nothing here may be sent again."""
    pipeline = conn._pipeline
    return pipeline is not None and bool(pipeline.command_queue or pipeline.result_queue)


def _one_statement(cursor: Any) -> bool:
    """After a failure: whether the cursor sent one statement (a text sent with the simple
    query protocol may hold several; a ';' anywhere in it counts as several)."""
    query = getattr(cursor, "_query", None)
    if query is None:
        return True  # nothing was sent
    return bool(query.params) or b";" not in query.query


class PooledCursor(PooledCursorMixin, psycopg.Cursor[Row]):
    """psycopg's default (server-side binding) cursor, with the pool's hooks."""

    __slots__ = ()


class PooledClientCursor(PooledCursorMixin, psycopg.ClientCursor[Row]):
    """psycopg's client-side binding cursor, with the pool's hooks."""

    __slots__ = ()


class PooledRawCursor(PooledCursorMixin, psycopg.RawCursor[Row]):
    """psycopg's raw-query cursor (``$1`` placeholders), with the pool's hooks."""

    __slots__ = ()


class PooledServerCursor(PooledCursorMixin, psycopg.ServerCursor[Row]):
    """psycopg's named (server-side) cursor, with the pool's hooks."""

    __slots__ = ()
