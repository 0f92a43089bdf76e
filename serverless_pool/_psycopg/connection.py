"""The connection class the pool hands out: a psycopg `Connection` that knows its borrow.

- **The borrow's first operation is retried only where the server provably never ran it**
  (`first_operation`): the session ended before it was sent.
- **Python-side state is restored on return.** psycopg keeps session attributes on the
  connection object (autocommit, isolation level, read-only, deferrable, prepared
  statement settings, row and cursor factories, adapters, notice and notify handlers,
  pending notifications, a libpq trace). The pool takes a `Baseline` when a connection
  is set up, and every change to it either flags the connection (`_sp_unclean`) as it
  happens or is compared by identity when the connection comes back; the return then
  restores it.
- **Every wait for the server is one method** (`wait`), which reads the deadline of the
  work in progress (`serverless_pool.deadline`) and bounds itself by it
  (`serverless_pool._psycopg.waiting`); nothing replaces it at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Final
from weakref import ref

import psycopg
from psycopg import IsolationLevel, pq
from psycopg._connection_base import BaseConnection
from psycopg.abc import PQGen
from psycopg.adapt import AdaptersMap
from psycopg.errors import Diagnostic
from psycopg.rows import Row
from psycopg.types import TypesRegistry

from ..deadline import current_deadline
from ..liveness import watch_socket
from . import bounded, first_operation, waiting

__all__ = ["Baseline", "PooledConnection"]

_OK = pq.ConnStatus.OK
_IDLE = pq.TransactionStatus.IDLE
_TEXT = pq.Format.TEXT
_BASE_WAIT: Any = psycopg.Connection.wait
_BASE_EXEC_COMMAND: Any = psycopg.Connection._exec_command
_WAIT_INTERVAL: Final = 0.1  # psycopg's own
_PREPARED_MAX: Any = BaseConnection.prepared_max


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
        # an adapter or a type on `conn.adapters` is the one change made inside an object.
        self.adapters = conn.adapters
        conn._adapters = _WatchedAdaptersMap(conn, self.adapters)


class _WatchedTypes(TypesRegistry):
    """psycopg's types registry (copy-on-write, as every cursor copies it) that marks the
    connection unclean when a type is registered on it (`TypeInfo.register(conn)`)."""

    def __init__(self, conn: PooledConnection[Any], template: TypesRegistry) -> None:
        super().__init__(template)
        self._sp_conn = ref(conn)

    def add(self, info: Any) -> None:
        conn = self._sp_conn()
        if conn is not None:
            conn._sp_unclean = True
        super().add(info)


class _WatchedAdaptersMap(AdaptersMap):
    """A copy-on-write child of the baseline map that flags the connection on change."""

    def __init__(self, conn: PooledConnection[Any], template: AdaptersMap) -> None:
        super().__init__(template)
        self._sp_conn = ref(conn)
        self.types = _WatchedTypes(conn, template.types)

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

    libpq hands an error that arrives while nothing of ours is pending to the notice
    handlers (an error that answers a statement becomes that statement's result): the
    session is over even though libpq still reports the connection as OK.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: PooledConnection[Any]) -> None:
        self._conn = ref(conn)

    def __call__(self, diag: Diagnostic) -> None:
        if diag.sqlstate in first_operation.TERMINATION_SQLSTATES:
            conn = self._conn()
            if conn is not None:
                conn._sp_terminated = conn._sp_look_again = True


def _nothing() -> None:
    pass


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
    # the pool last saw the session alive (and, in direct mode, its reset answered).
    # 0.0 otherwise.
    _sp_fresh: float = 0.0
    # The server's goodbye arrived between statements (see `_GoodbyeWatch`).
    _sp_terminated: bool = False
    # Set up by `_sp_setup()`: the Python-side state every return restores.
    _sp_baseline: Baseline
    # The return must restore Python-side state: one of psycopg's connection attributes
    # or the adapters changed. One flag, so that a clean return reads one attribute.
    _sp_unclean: bool = False
    # psycopg's queue of notifications received while nobody listens (psycopg 3.2.4+
    # keeps the same deque for the connection's life): a return with some is unclean,
    # and those that arrive before the reset's UNLISTEN are dropped.
    _sp_notifies: Any = ()

    # A poll object on the server connection's socket, made at connect time and again
    # when the server connection is swapped, so a check costs one system call.
    _sp_watch: Any = None
    # The session runs over TLS (libpq then reads one TLS record at a time).
    _sp_tls: bool = False
    # The borrow must look beyond the answer to the reset: the session runs over TLS, or
    # the server said goodbye. One flag, so the common borrow reads one attribute.
    _sp_look_again: bool = False

    # Set by a pool for writes: called when a statement found the server read-only.
    _sp_on_read_only: Callable[[PooledConnection[Any]], None] | None = None
    # Set by the pool from its ``deadline_function`` setting: the SQL function that sets
    # the statement's bound (`serverless_pool.statement_deadline`), instead of SET LOCAL.
    _sp_deadline_function: bytes | None = None
    # Set by the pool from its ``statement_timeout`` setting (direct mode), in ms: the
    # deadline's bound never exceeds it. PostgreSQL's largest value otherwise.
    _sp_statement_timeout_ms: int = 2**31 - 1

    def _sp_setup(self) -> Baseline:
        """After the pool configured the connection: watch it, and take its baseline."""
        self._sp_watch = watch_socket(self.pgconn.socket)
        # Set on the object, not left to the class defaults: the interpreter reads an
        # object's own attributes fastest, and the borrow reads these every time.
        self._sp_tls = self._sp_look_again = bool(self.pgconn.ssl_in_use)
        self._sp_terminated = False
        self._sp_notifies = self._notifies_backlog
        self.add_notice_handler(_GoodbyeWatch(self))
        baseline = Baseline(self)
        self._sp_unclean = False
        return baseline

    def _sp_socket_quiet(self) -> bool:
        """True if libpq thinks the connection is fine and its socket has nothing to read."""
        if self.pgconn.status != _OK or self._sp_terminated:
            return False
        return not self._sp_watch.poll(0)

    # -- the borrow's first operation: see `first_operation` ---------------------------

    def _sp_swap(self) -> bool:
        """Put a fresh server session under this object, before the borrow's first operation."""
        # Never inside a pipeline: `first_operation` sends nothing again there.
        assert self._sp_replace is not None
        assert self._pipeline is None
        return self._sp_replace(self, "dead_on_first_statement")

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

    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Any:
        if self._sp_fresh and self._pipeline is None:
            return self._sp_first_transaction(savepoint_name, force_rollback)
        return super().transaction(savepoint_name, force_rollback)

    @contextmanager
    def _sp_first_transaction(
        self, savepoint_name: str | None, force_rollback: bool
    ) -> Iterator[psycopg.Transaction]:
        """`transaction()` as the borrow's first operation: its BEGIN, which commits
        nothing, is sent again on a fresh session if the session ended under it."""

        def enter() -> psycopg.Transaction:
            tx = psycopg.Transaction(self, savepoint_name, force_rollback)
            tx.__enter__()
            return tx

        tx = first_operation.run(self, enter, first_operation.HARMLESS)
        try:
            yield tx
        except BaseException as exc:
            if not tx.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            tx.__exit__(None, None, None)

    def pipeline(self) -> Any:
        if self._sp_fresh:
            # Statements queued in a pipeline are never sent again: the session is only
            # looked at once more before the first of them.
            first_operation.run(self, _nothing, first_operation.HARMLESS)
        return super().pipeline()

    def _sp_begin(self) -> None:
        """Send psycopg's own BEGIN of a connection out of autocommit now, so that the
        borrow's first statement follows a BEGIN that is known to have worked."""
        self.wait(self._start_query())

    # -- every wait for the server -----------------------------------------------------

    def wait(
        self, gen: PQGen[Any], interval: float = _WAIT_INTERVAL, timeout: float | None = None
    ) -> Any:
        if timeout is None:
            until = current_deadline()
            if until is not None:
                return waiting.deadline_wait(self, gen, interval, until)
            return _BASE_WAIT(self, gen, interval)
        return _BASE_WAIT(self, gen, interval, timeout)

    def _exec_command(self, command: Any, result_format: pq.Format = _TEXT) -> Any:
        if bounded.in_use and type(command) is bytes and command.startswith(b"BEGIN"):
            gen = bounded.begin_gen(self, command, result_format)
            if gen is not None:
                return gen
        gen = _BASE_EXEC_COMMAND(self, command, result_format)
        return first_operation.watch_commit(self, gen) if command == b"COMMIT" else gen

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
        if self._sp_notifies:
            self._sp_notifies.clear()
        adapters = self._adapters
        if (
            self._sp_unclean
            or not isinstance(adapters, _WatchedAdaptersMap)
            or adapters._sp_conn() is not self
        ):
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

    @property
    def prepared_max(self) -> int | None:
        return _PREPARED_MAX.fget(self)  # type: ignore[no-any-return]

    @prepared_max.setter
    def prepared_max(self, value: int | None) -> None:
        self._sp_unclean = True
        _PREPARED_MAX.fset(self, value)

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
        super().tpc_begin(xid)
