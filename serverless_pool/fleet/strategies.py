"""The ways an instance can get its connection, as the fleet compares them.

Each strategy is what one Lambda function does with its database connection; every
instance of the fleet runs the same function (`serverless_pool.fleet.function`), built
in its init phase, through `make_handler`:

- ``connect-per-request``: ``psycopg.connect()`` at the start of each request and
  close at its end, no retry (Django's default, ``CONN_MAX_AGE=0``).
- ``module-level``: one connection opened at the first request and held for the life
  of the instance, frozen or not (a module-level psycopg connection, or a pool with no
  liveness check). A broken one is replaced at the next request.
- ``serverless-pool``: a `ServerlessPool` with the defaults it has on Lambda
  (``max_size=1``, connect retries with backoff within the invocation's deadline, a
  socket check on every borrow), its ``idle_session_timeout`` set to the simulation's.
- ``serverless-pool-no-extension``: the same with ``make_handler(register_extension=
  False)``: Lambda sends no SIGTERM at shutdown, so the pool cannot close.
- ``serverless-pool-pgbouncer``: the same pool pointed at PgBouncer in transaction
  mode (``proxy_mode="pgbouncer-transaction"``), whose pool has the budget's slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

import psycopg

from ..errors import PoolTimeout

__all__ = [
    "LABELS",
    "STRATEGIES",
    "Access",
    "StrategySpec",
    "error_kind",
    "make_access",
    "spec",
]

STRATEGIES: Final = (
    "connect-per-request",
    "module-level",
    "serverless-pool",
    "serverless-pool-no-extension",
    "serverless-pool-pgbouncer",
)

LABELS: Final = {
    "connect-per-request": "connect per request",
    "module-level": "module-level connection",
    "serverless-pool": "ServerlessPool",
    "serverless-pool-no-extension": "ServerlessPool, no extension",
    "serverless-pool-pgbouncer": "ServerlessPool → PgBouncer",
}

#: One statement: the database work of a request, and which server session ran it.
QUERY: Final = "SELECT pg_backend_pid(), pg_sleep(%s)"


@dataclass(frozen=True)
class StrategySpec:
    """How the simulation sets a strategy up."""

    name: str
    #: ``connect``, ``module`` or ``pool``: what the function does per request
    access: str
    #: whether `make_handler` registers its extension (so SIGTERM comes at shutdown)
    extension: bool = True
    #: whether the connections go through PgBouncer
    proxy: bool = False

    @property
    def holds_session(self) -> bool:
        """Whether an instance keeps a server session of its own between requests."""
        return self.access != "connect" and not self.proxy


_SPECS: Final = {
    "connect-per-request": StrategySpec("connect-per-request", "connect"),
    "module-level": StrategySpec("module-level", "module"),
    "serverless-pool": StrategySpec("serverless-pool", "pool"),
    "serverless-pool-no-extension": StrategySpec(
        "serverless-pool-no-extension", "pool", extension=False
    ),
    "serverless-pool-pgbouncer": StrategySpec("serverless-pool-pgbouncer", "pool", proxy=True),
}


def spec(name: str) -> StrategySpec:
    """The `StrategySpec` of the strategy called `name`."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}"
        ) from None


class Access(Protocol):
    """One instance's way of running a request's database work."""

    def run(self, seconds: float) -> int:
        """Run the request's statement; return the server session's pid. Raise on failure."""

    def connects(self) -> int:
        """Connections opened so far."""


class _ConnectPerRequest:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._connects = 0

    def run(self, seconds: float) -> int:
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            self._connects += 1
            return _execute(conn, seconds)

    def connects(self) -> int:
        return self._connects


class _ModuleLevel:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._connects = 0

    def run(self, seconds: float) -> int:
        if self._conn is None:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._connects += 1
        try:
            return _execute(self._conn, seconds)
        except psycopg.Error:
            # Not even naive code keeps a broken connection: it reconnects next time.
            self._conn.close()
            self._conn = None
            raise

    def connects(self) -> int:
        return self._connects


class _Pooled:
    def __init__(self, conninfo: str) -> None:
        from ..pool import ServerlessPool

        # Every other setting comes from SERVERLESS_POOL_* variables, as in a deployment.
        self._pool = ServerlessPool(conninfo, name="fleet")

    def run(self, seconds: float) -> int:
        with self._pool.connection() as conn:
            return _execute(conn, seconds)

    def connects(self) -> int:
        from ..stats import CONNECTIONS_OPENED

        return int(self._pool.stats().get(CONNECTIONS_OPENED, 0))


def _execute(conn: psycopg.Connection[Any], seconds: float) -> int:
    row = conn.execute(QUERY, (seconds,)).fetchone()
    return int(row[0]) if row else 0


def make_access(name: str, conninfo: str) -> Access:
    """The database access of strategy `name`, for one instance."""
    access = spec(name).access
    if access == "connect":
        return _ConnectPerRequest(conninfo)
    if access == "module":
        return _ModuleLevel(conninfo)
    return _Pooled(conninfo)


def error_kind(err: BaseException) -> str:
    """A short, stable name for why a request failed (never the message itself)."""
    if isinstance(err, PoolTimeout):
        return "pool timeout"
    text = str(err).lower()
    if "too many clients" in text or "remaining connection slots" in text:
        return "too many clients"
    if "too many connections" in text:
        return "too many connections"
    if "idle-session timeout" in text or "idle_session_timeout" in text:
        return "killed by idle timeout"
    if "server closed the connection" in text or "consuming input failed" in text:
        return "connection closed"
    if "the connection is closed" in text or "connection is lost" in text:
        return "connection closed"
    return type(err).__name__
