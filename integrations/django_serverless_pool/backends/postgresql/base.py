"""The database wrapper: Django's PostgreSQL backend on pooled connections.

When Django opens a connection (the first query of a request) it borrows one from the
alias's pool; at the end of the request (the middleware, or Django's own
``close_old_connections``) the connection goes back to the pool. The borrow checks the
socket (µs) and pings after a long idle gap, so ``CONN_HEALTH_CHECKS`` adds nothing.

Between requests a clean connection is *parked*: back in the pool, still "open" for
Django. When the next borrow of this thread gets the same connection back, Django's
connect/close book-keeping is skipped, as with a persistent connection; any other
connection goes through Django's ``connect()``. The pool resets every session it gets
back, so when ``connection_created`` has receivers (which set a session up), nothing is
parked and every borrow goes through ``connect()``. A parked connection is never used
before it is borrowed again: every Django path to it goes through
``ensure_connection()``, and ``commit()``/``rollback()`` between requests skip it.

When ``make_handler`` takes back a connection a wrapper still holds at the end of an
invocation (a ``request_finished`` receiver that queried after Django's own cleanup, ORM
work in a thread that never gives its connection back), the pool asks the wrapper to let
go (`ServerlessPool.acquire_held`): under the wrapper's lock it forgets the connection,
so that its next use borrows anew. Every change of the wrapper's hold on a connection
(borrowing, parking, giving back, letting go) happens under that lock. A connection
taken from another thread's wrapper is closed rather than reused: a cursor that thread
still has can then only fail, never run in the next borrower's session.

Django normally sends ``SET TIME ZONE`` (and ``SET ROLE`` for ``assume_role``) on every
new connection. Here both are startup parameters of the server session instead, so a
borrow costs no round trip and leaves no session state that would need a reset. A role
that cannot be assumed still fails as with Django: with the server's own error from
``SET ROLE`` (`_sp_role_error`).
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Hashable, Mapping
from typing import Any

import django
import psycopg
from django.conf import settings as django_settings
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper
from django.db.backends.postgresql import base as django_base
from django.db.backends.postgresql.psycopg_any import (
    DjangoRangeDumper,
    register_tzloader,
)
from django.db.backends.signals import connection_created
from django.db.utils import ProgrammingError
from django.utils.asyncio import async_unsafe
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.range import Range
from psycopg.types.string import TextLoader

from serverless_pool import ConnectionFailed, PoolClosed, PooledConnection, ServerlessPool

# The ENGINE registers the system checks itself, so a project that uses it without
# adding the app to INSTALLED_APPS is still checked (and told, serverless_pool.W003).
from ... import checks as _checks  # noqa: F401
from ...conf import SETTING, conf
from . import cursors, pools
from .creation import DatabaseCreation

__all__ = ["DatabaseWrapper"]

# Connection arguments of Django's that are Python objects, not libpq parameters.
_NOT_LIBPQ = ("context", "cursor_factory", "prepare_threshold", "password")


class DatabaseWrapper(django_base.DatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper`` borrowing from a `ServerlessPool`."""

    creation_class = DatabaseCreation

    # The pool that lent the current connection (None for an unpooled one).
    _sp_lender: ServerlessPool | None = None
    # Between requests the connection is back in the pool but stays "open" for Django
    # (parked), so the next request skips Django's connect/close book-keeping when the
    # pool lends the same connection again. This is the pool it went back to.
    _sp_parked: ServerlessPool | None = None
    # A connection borrowed while unparking, and its pool, for get_new_connection().
    _sp_pending: tuple[ServerlessPool, PooledConnection[Any]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Held while the wrapper's hold on a connection changes; reentrant, since giving
        # back may go through Django's close() (see `_sp_reclaimed`).
        self._sp_lock = threading.RLock()
        # One bound method, the token of every loan of this wrapper (see acquire_held).
        self._sp_holder = self._sp_reclaimed
        # The list of borrowing wrappers of the thread that borrowed (see pools.lent()).
        self._sp_loans: list[DatabaseWrapper] = []
        pools.track_wrapper(self)

    # -- the pool ----------------------------------------------------------------------

    @property
    def pool(self) -> None:
        """Django's own pool is never used with this backend (see check E005)."""
        return None

    @property
    def serverless_pool(self) -> ServerlessPool:
        """This alias's pool for the settings in force, built at first use.

        Everything the pool is built from is in its key: a change of ``DATABASES``
        (``OPTIONS`` included), ``SERVERLESS_POOL``, the time zone, made by
        ``override_settings`` or in place, gives the next connection a new pool.
        """
        sd = self.settings_dict
        key: Hashable = (
            sd["NAME"],
            sd["USER"],
            sd["PASSWORD"],
            sd["HOST"],
            sd["PORT"],
            sd["AUTOCOMMIT"],
            _frozen(sd["OPTIONS"]),
            _frozen(sd.get(SETTING)),
            _frozen(getattr(django_settings, SETTING, None)),
            self.timezone_name,
            pools.generation(),
        )
        return pools.get_pool(self.alias, key, self._build_pool)

    @property
    def borrowing(self) -> bool:
        """Whether this wrapper holds a connection on loan from the pool right now."""
        return self._sp_lender is not None

    def close_pool(self) -> None:
        """Close this alias's pool (Django calls it around test database creation)."""
        pools.close_pools(self.alias)

    def _build_pool(self) -> ServerlessPool:
        settings = conf.engine_settings(self.alias, self.settings_dict)
        params = super().get_connection_params()
        password = params.get("password")
        options = self.settings_dict["OPTIONS"]
        # Django's choice (client- or server-side binding) or the user's class, kept as
        # the connection's cursor_factory; create_cursor() adds the pool's hooks. Django
        # 4.2.0 made that choice in get_new_connection(), with this rule.
        cursor_factory: Any = params.get("cursor_factory") or (
            django_base.ServerBindingCursor
            if options.get("server_side_binding") is True
            else django_base.Cursor
        )
        libpq = {k: v for k, v in params.items() if k not in _NOT_LIBPQ and v is not None}
        if settings.uses_session_state:
            startup = [str(libpq.get("options") or "")]
            if self.timezone_name:
                startup.append(f"-c TimeZone={_escape(self.timezone_name)}")
            if role := options.get("assume_role"):
                startup.append(f"-c role={_escape(role)}")
            libpq["options"] = " ".join(filter(None, startup))
        timezone = self.timezone

        def configure(conn: PooledConnection[Any]) -> None:
            conn.cursor_factory = cursor_factory
            # What Django's adapters template registers, on this connection's own map.
            adapters = conn.adapters
            adapters.register_loader("jsonb", TextLoader)
            adapters.register_loader("inet", TextLoader)
            adapters.register_loader("cidr", TextLoader)
            adapters.register_dumper(Range, DjangoRangeDumper)
            register_tzloader(timezone, conn)

        return ServerlessPool(
            make_conninfo("", **libpq),
            password=password,
            configure=configure,
            settings=settings,
        )

    def _sp_borrow(self, pool: ServerlessPool) -> tuple[ServerlessPool, PooledConnection[Any]]:
        """A connection from `pool` and the pool that lent it; failures explained as
        Django would raise them."""
        try:
            return pool, pool.acquire_held(self._sp_holder)
        except PoolClosed:
            # Another thread's settings change closed it after we looked it up.
            pool = self.serverless_pool
            return pool, pool.acquire_held(self._sp_holder)
        except ConnectionFailed as failed:
            role = self.settings_dict["OPTIONS"].get("assume_role")
            if role and pool.settings.uses_session_state:
                error = self._sp_role_error(role)
                if error is not None:
                    raise error from failed
            raise

    def _sp_role_error(self, role: str) -> psycopg.Error | None:
        """Why the server refuses `role`, from ``SET ROLE`` as Django sends it, if it does.

        The role is a startup parameter of pooled sessions, where the server refuses a
        role it cannot grant by refusing the login. Django sends ``SET ROLE`` after
        connecting instead, and raises what that statement raises
        (``InvalidParameterValue``: role "…" does not exist, or
        ``InsufficientPrivilege``). So after a failed login with a role, one connection
        without it asks the server the same question Django would, and that answer is
        the error. None when the role was not the problem.
        """
        params = super().get_connection_params()
        libpq = {k: v for k, v in params.items() if k not in _NOT_LIBPQ and v is not None}
        try:
            probe = psycopg.Connection.connect(
                make_conninfo("", **libpq), password=params.get("password"), autocommit=True
            )
        except psycopg.Error:
            return None  # the login itself fails: the original error says why
        with probe:
            try:
                probe.execute(sql.SQL("SET ROLE {}").format(sql.Literal(role)))
            except psycopg.Error as refused:
                return refused
        return None

    # -- connecting and closing ----------------------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if self.alias == NO_DB_ALIAS:
            # The maintenance connection of test database creation: never pooled.
            self._sp_lender = None
            return super().get_new_connection(conn_params)
        options = self.settings_dict["OPTIONS"]
        level = options.get("isolation_level")
        try:
            self.isolation_level = (
                psycopg.IsolationLevel.READ_COMMITTED
                if level is None
                else psycopg.IsolationLevel(level)
            )
        except ValueError:
            # Django's own error and words: its get_new_connection() raises
            # ImproperlyConfigured for this value before it connects.
            raise_djangos_error: Any = django_base.DatabaseWrapper.get_new_connection
            raise_djangos_error(self, {})
            raise
        with self._sp_lock:
            pending, self._sp_pending = self._sp_pending, None
            pool, connection = pending or self._sp_borrow(self.serverless_pool)
            self._sp_lender = pool
            pools.lent(self)
        if level is not None:
            connection.isolation_level = self.isolation_level
        return connection

    def get_connection_params(self) -> dict[str, Any]:
        if self.alias == NO_DB_ALIAS:
            return super().get_connection_params()
        # The pool already holds these; building them per request is wasted work.
        return {}

    def init_connection_state(self) -> None:
        if self._sp_lender is None or not self._sp_lender.settings.uses_session_state:
            # Unpooled, or behind a proxy (no startup parameters): Django's own
            # SET TIME ZONE and SET ROLE, on every borrow.
            super().init_connection_state()
            return
        # The pool was built for this time zone and role, and they are startup
        # parameters of its sessions: nothing to send. (A SET in a request marks the
        # session dirty, and the reset on return restores the startup values.)
        BaseDatabaseWrapper.init_connection_state(self)

    def _close(self) -> None:
        with self._sp_lock:
            if self._sp_parked is not None:
                # Already back in the pool: only forget it.
                self._sp_parked = None
                self.connection = None
                return
            connection, lender = self.connection, self._sp_lender
            if connection is None or lender is None:
                parent: Any = super()
                parent._close()
                return
            self.connection = None
            self._sp_lender = None
            pools.returned(self)
            with self.wrap_database_errors:
                lender.release(connection)

    def _commit(self) -> None:
        # A parked connection is back in the pool, perhaps lent to another thread: nothing
        # of this wrapper is open on it (it parks only outside atomic(), in its
        # AUTOCOMMIT mode), so Django's commit() or rollback() between requests must not
        # reach it.
        if self._sp_parked is None:
            parent: Any = super()
            parent._commit()

    def _rollback(self) -> None:
        if self._sp_parked is None:
            parent: Any = super()
            parent._rollback()

    def _set_autocommit(self, autocommit: bool) -> None:
        # A borrowed connection usually is in Django's mode already: skip the switch.
        if self._sp_lender is None or self.connection.autocommit is not autocommit:
            parent: Any = super()
            parent._set_autocommit(autocommit)

    def close_if_unusable_or_obsolete(self) -> None:
        """Give the connection back (Django calls this at the start and end of requests)."""
        self.release_to_pool()

    @async_unsafe
    def ensure_connection(self) -> None:
        if self._sp_parked is not None:
            self._sp_unpark()
        elif self.connection is None:
            if self.in_atomic_block and self.closed_in_transaction and django.VERSION < (5,):
                # Django 5 refuses this itself. Django 4.2 counts on its closed connection
                # object to raise; ours went back to the pool instead.
                raise ProgrammingError(
                    "the connection was closed inside this atomic block: leave the block"
                    " before using the database again"
                )
            super().ensure_connection()

    def is_usable(self) -> bool:
        # A parked connection is not ours to use; the pool checks it at the next borrow.
        # One given back by _close() is not usable (Django 4.2 would crash on None).
        if self._sp_parked is not None:
            return True
        return self.connection is not None and bool(super().is_usable())

    def ensure_timezone(self) -> bool:
        # Called when TIME_ZONE/USE_TZ change: a parked connection is not ours to SET.
        if self._sp_parked is not None:
            self._sp_parked = None
            self.connection = None
        return bool(super().ensure_timezone())

    def close_if_health_check_failed(self) -> None:
        # Every borrow is checked by the pool.
        return

    def release_to_pool(self) -> bool:
        """Give the connection back unless an ``atomic()`` block still uses it.

        Returns whether a connection went back.
        """
        with self._sp_lock:
            return self._sp_give_back()

    def _sp_give_back(self) -> bool:
        connection, lender = self.connection, self._sp_lender
        if connection is None or lender is None or self.in_atomic_block:
            return False
        if (
            # Parking needs a session that comes back as Django set it up. The reset on
            # return keeps the startup parameters Django's time zone and role are, and
            # the pool's own set-up; whatever a connection_created receiver did (a SET,
            # adapters such as django.contrib.postgres registers) it undoes, so then
            # every borrow goes through Django's connect() and the receivers run again.
            connection_created.receivers
            or self.autocommit is not self.settings_dict["AUTOCOMMIT"]
            or self.needs_rollback
        ):
            # Django's state needs a fresh start: the next request goes through
            # Django's connect() (and connection_created).
            self.close()
            return True
        self._sp_lender = None
        self._sp_parked = lender
        pools.returned(self)
        self.run_on_commit = []
        self.errors_occurred = False
        try:
            lender.release(connection)
        except psycopg.Error:
            # Django's exception for it; entering the wrapper only on an error saves
            # two calls on every request.
            with self.wrap_database_errors:
                raise
        return True

    def _sp_unpark(self) -> None:
        """Borrow again after parking; Django's connect() only for a different session."""
        with self._sp_lock:
            parked, pool = self.connection, self._sp_parked
            self._sp_parked = None
            self.connection = None
            # Whatever would change the pool to use closes it: DATABASES, SERVERLESS_POOL,
            # TIME_ZONE or USE_TZ changing (the setting_changed signal), the test runner
            # renaming the database (it closes the connection first). An open pool
            # is still this alias's pool. Settings changed in place take effect at the
            # next connect, after close(), as with Django's own persistent connections.
            current = self.serverless_pool if pool is None or pool._closed else pool
            try:
                current, connection = self._sp_borrow(current)
            except psycopg.Error:
                with self.wrap_database_errors:
                    raise
            if connection is parked and pool is current:
                self.connection = connection
                self._sp_lender = current
                pools.lent(self)
                if self.settings_dict["OPTIONS"].get("isolation_level") is not None:
                    connection.isolation_level = self.isolation_level
                return
            self._sp_pending = (current, connection)
        try:
            super().ensure_connection()
        finally:
            if self._sp_pending is not None:  # connect() failed before taking it
                self._sp_pending = None
                current.release(connection)

    def _sp_reclaimed(self, connection: PooledConnection[Any]) -> None:
        """The pool takes `connection` back (`ServerlessPool.reclaim()`, at the end of an
        invocation): let go of it, so that the next use borrows anew. Any thread may call
        this; it does nothing if the wrapper let go already."""
        with self._sp_lock:
            lender = self._sp_lender
            if lender is None or self.connection is not connection:
                return  # given back meanwhile, or not held yet: not ours to end
            # The thread Django made this wrapper for (and checks in validate_thread_sharing).
            if self._thread_ident != _thread.get_ident():  # type: ignore[attr-defined]
                # The thread that borrowed it may still have a cursor on it, or run a
                # statement: the session ends here (after that statement), so that
                # nothing of that thread can reach the next borrower's.
                with connection.lock:
                    connection.close()
            elif not self.in_atomic_block:
                # This thread, between requests: given back as at the end of one.
                self._sp_give_back()
                return
            if self.in_atomic_block:
                # As Django's close() inside atomic(): the block can only roll back.
                self.closed_in_transaction = True
                self.needs_rollback = True
            self.connection = None
            self._sp_lender = None
            pools.returned(self)
            lender.release(connection)

    def _sp_forget_after_fork(self) -> None:
        # The connection belongs to the parent process; the core has disowned it.
        self._sp_lock = threading.RLock()  # another thread may have held it at fork time
        self._sp_loans = []
        self.connection = None
        self._sp_lender = None
        self._sp_parked = None
        self._sp_pending = None

    # -- cursors -------------------------------------------------------------------------

    def create_cursor(self, name: str | None = None) -> Any:
        if self._sp_lender is None:
            return super().create_cursor(name)
        connection = self.connection
        # The connection's factories are Django's (or the user's) classes, as with
        # Django's backend; the cursors made here carry the pool's hooks too.
        if name is None:
            cursor = cursors.pooled(connection.cursor_factory)(connection)
        else:
            named: Any = cursors.ServerSideCursor
            if named is None or self.settings_dict["OPTIONS"].get("server_side_binding") is True:
                named = cursors.pooled(connection.server_cursor_factory)
            # In autocommit mode the cursor outlives the statement's transaction.
            cursor = named(connection, name=name, scrollable=False, withhold=connection.autocommit)
        loader = connection.adapters.get_loader(django_base.TIMESTAMPTZ_OID, psycopg.pq.Format.TEXT)
        if self.timezone != loader.timezone:
            register_tzloader(self.timezone, cursor)
        return cursor


def _escape(value: str) -> str:
    """Escape a value for libpq's ``options`` (spaces and backslashes)."""
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def _frozen(value: object) -> Hashable:
    """`value` (settings: dicts, lists, classes...) as something a dict key can hold."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(_frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("unhashable", type(value).__name__, id(value))
    return value
