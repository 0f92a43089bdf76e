"""The Flask extension: one pool per app, one connection per app context.

A connection is borrowed the first time a context asks for one and given back when
the app context is torn down, whatever happened in between (an exception in the view,
an ``abort()``, a streamed response that keeps the context alive until it ends). A
request that never touches the database borrows nothing.

A context that outlives the invocation (one pushed at import, or by a worker thread
that keeps it) still holds its connection when ``make_handler`` takes it back: the pool
then asks the context to let go (`ServerlessPool.acquire_held`), and the connection
leaves the context's ``g`` before it is lent again, so the context's next use borrows
anew. Taken from another thread's context, it is closed rather than reused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from threading import get_ident
from types import TracebackType
from typing import Any, Final

from flask import Flask

# The context variable behind `flask.g` and `current_app`: reading it directly skips
# two proxy look-ups on every request (a few µs of a ~100 µs request).
from flask.globals import _cv_app
from psycopg.rows import TupleRow

from serverless_pool import PooledConnection
from serverless_pool import ServerlessPool as CorePool
from serverless_pool.conninfo import describe_conninfo

from .config import PoolConfig, read_config

__all__ = ["EXTENSION_KEY", "PoolState", "ServerlessPool"]

#: Key of this extension's state in ``app.extensions``.
EXTENSION_KEY: Final = "serverless_pool"
# Attribute of `flask.g` holding the context's connection.
_G_KEY: Final = "_serverless_pool_connection"
_NO_CONTEXT: Final = (
    "serverless-pool: a database connection needs an application context;"
    " use it inside a request, a CLI command, or 'with app.app_context():'"
)

Password = str | Callable[[], str]
Configure = Callable[[PooledConnection[Any]], None]


@dataclass(frozen=True)
class PoolState:
    """What the extension keeps in ``app.extensions["serverless_pool"]``."""

    extension: ServerlessPool
    pool: CorePool
    config: PoolConfig
    #: the database target without secrets, for display
    target: str


class ServerlessPool:
    """Flask extension giving each app a `serverless_pool.ServerlessPool`.

    ``db = ServerlessPool(app)``, or ``db = ServerlessPool()`` then ``db.init_app(app)``
    in an application factory; one extension object may serve several apps, each with
    its own pool. In a view: ``with db.connection() as conn: conn.execute(...)``.

    :param password: a password, or a callable returning one (called for every new
        connection, e.g. for an RDS IAM token); never shown anywhere.
    :param configure: called with each new connection before its first use.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        password: Password | None = None,
        configure: Configure | None = None,
    ) -> None:
        self._password = password
        self._configure = configure
        # Stateless, so one serves every `with db.connection()`, nested or concurrent.
        self._context_connection = _ContextConnection(self)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create `app`'s pool from its config and register the teardown and CLI.

        Config keys (each falls back to the environment variable of the same name,
        then to the default; see `serverless_pool.settings.SCHEMA` for every setting):

        - ``SERVERLESS_POOL_DATABASE_URL``: libpq connection string or
          ``postgresql://`` URL (required).
        - ``SERVERLESS_POOL_NAME`` (default: the app's name),
          ``SERVERLESS_POOL_MAX_SIZE`` (1 on Lambda, else 4),
          ``SERVERLESS_POOL_MIN_SIZE``, ``SERVERLESS_POOL_ACQUIRE_TIMEOUT``,
          ``SERVERLESS_POOL_CONNECT_TIMEOUT``, ``SERVERLESS_POOL_MAX_IDLE``,
          ``SERVERLESS_POOL_MAX_LIFETIME``, ``SERVERLESS_POOL_PING_AFTER_IDLE``,
          ``SERVERLESS_POOL_PING_TIMEOUT``, ``SERVERLESS_POOL_IDLE_SESSION_TIMEOUT``,
          ``SERVERLESS_POOL_IDLE_IN_TRANSACTION_SESSION_TIMEOUT``,
          ``SERVERLESS_POOL_STATEMENT_TIMEOUT``, ``SERVERLESS_POOL_AUTOCOMMIT``,
          ``SERVERLESS_POOL_PROXY_MODE``, ``SERVERLESS_POOL_PREPARE_THRESHOLD``,
          ``SERVERLESS_POOL_RESET_ON_RETURN``, ``SERVERLESS_POOL_RETRY_BACKOFF``,
          ``SERVERLESS_POOL_RETRY_BACKOFF_MAX``, ``SERVERLESS_POOL_APPLICATION_NAME``,
          ``SERVERLESS_POOL_CLOSE_ON_SIGTERM``.

        An unknown ``SERVERLESS_POOL_*`` key, a missing database URL or an invalid
        value raises `serverless_pool.SettingsError` naming the key. No connection is
        opened here.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"a serverless-pool extension is already registered on the app {app.name!r};"
                " call init_app() once per app"
            )
        config = read_config(app.config, default_name=app.name)
        pool = CorePool(
            config.conninfo,
            password=self._password,
            configure=self._configure,
            settings=config.settings,
        )
        app.extensions[EXTENSION_KEY] = PoolState(
            self, pool, config, describe_conninfo(config.conninfo)
        )
        app.teardown_appcontext(_release_context_connection)

        from .cli import pool_cli  # here, because the cli module imports this one

        app.cli.add_command(pool_cli)

    # -- in a request ----------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> _ContextConnection:
        """The app context's connection, borrowed on first use, for a ``with`` block.

        Every call within one app context (one request) yields the same connection;
        it goes back to the pool when the context ends, not when the block does, so
        nested use is free. Autocommit unless ``SERVERLESS_POOL_AUTOCOMMIT`` is false.
        `timeout` bounds the wait for a free connection (default: the
        ``acquire_timeout`` setting); it only matters for the first call of a context.
        """
        if timeout is None:
            return self._context_connection
        return _ContextConnection(self, timeout)

    def get_connection(self, timeout: float | None = None) -> PooledConnection[TupleRow]:
        """The app context's connection (borrowed now if it has none yet)."""
        return _ContextConnection(self, timeout).__enter__()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PooledConnection[TupleRow]]:
        """A transaction on the context's connection: committed if the block ends
        normally, rolled back if it raises. Nested use makes a savepoint.
        """
        conn = self.get_connection()
        with conn.transaction():
            yield conn

    # -- the app's pool --------------------------------------------------------------

    @property
    def pool(self) -> CorePool:
        """The current app's core pool (needs an app context)."""
        return self._state().pool

    def get_pool(self, app: Flask) -> CorePool:
        """`app`'s core pool, without an app context (e.g. to warm or close it)."""
        return self._state(app).pool

    def _state(self, app: Flask | None = None) -> PoolState:
        if app is None:
            ctx = _cv_app.get(None)
            if ctx is None:
                raise RuntimeError(_NO_CONTEXT)
            app = ctx.app
        state: PoolState | None = app.extensions.get(EXTENSION_KEY)
        if state is None or state.extension is not self:
            raise RuntimeError(
                f"this serverless-pool extension is not registered on the app {app.name!r};"
                " call init_app(app) first"
            )
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (Flask extension)>"


def get_state(app: Flask) -> PoolState:
    """`app`'s extension state; a clear error when the extension is not registered."""
    state: PoolState | None = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError(
            f"serverless-pool is not registered on the app {app.name!r};"
            " call ServerlessPool(app) or init_app(app)"
        )
    return state


def _release_context_connection(exc: BaseException | None) -> None:
    conn = _cv_app.get().g.__dict__.pop(_G_KEY, None)
    if conn is not None:
        # The connection's own pool: the app's, whichever extension object lent it.
        conn._sp_entry.owner.release(conn)


def _let_go(held: dict[str, Any], thread: int, conn: PooledConnection[Any]) -> None:
    """The pool takes `conn` back from the context whose ``g`` is `held` (the holder of
    `ServerlessPool.acquire_held`); any thread may call it."""
    if held.get(_G_KEY) is not conn:
        return  # the context's teardown gave it back meanwhile
    # Atomic: of this and the teardown (which pops too), exactly one takes it.
    taken = held.pop(_G_KEY, None)
    if taken is not conn:
        if taken is not None:  # borrowed again meanwhile: not this loan's
            held.setdefault(_G_KEY, taken)
        return
    if thread != get_ident():
        # The thread that borrowed it may still have a cursor on it, or run a statement:
        # the session ends here (after that statement), never lent again.
        with conn.lock:
            conn.close()
    conn._sp_entry.owner.release(conn)


class _ContextConnection:
    """What `ServerlessPool.connection()` returns; leaving the block releases nothing."""

    __slots__ = ("_extension", "_last", "_timeout")

    def __init__(self, extension: ServerlessPool, timeout: float | None = None) -> None:
        self._extension = extension
        self._timeout = timeout
        # The app last served and its pool, as one tuple so that threads serving two
        # apps never pair one's app with the other's pool.
        self._last: tuple[Flask | None, CorePool | None] = (None, None)

    def __enter__(self) -> PooledConnection[TupleRow]:
        # The borrow itself lives here, not in get_connection(): `with db.connection()`
        # is what views run, and every call saved is paid on every request.
        ctx = _cv_app.get(None)
        if ctx is None:
            raise RuntimeError(_NO_CONTEXT)
        held = ctx.g.__dict__
        conn: PooledConnection[TupleRow] | None = held.get(_G_KEY)
        if conn is None:
            app, pool = self._last
            if app is not ctx.app or pool is None:
                app = ctx.app
                pool = self._extension._state(app).pool  # raises the explanation
                self._last = (app, pool)
            holder = partial(_let_go, held, get_ident())
            conn = held[_G_KEY] = pool.acquire_held(holder, self._timeout)
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None
