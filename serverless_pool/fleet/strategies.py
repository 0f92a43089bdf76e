"""The three ways an instance can get its connection, as the fleet compares them.

Each strategy is what one Lambda instance does with its database connection, built
when the instance starts (its cold start) and used for every request it serves:

- ``connect-per-request``: ``psycopg.connect()`` at the start of each request and
  close at its end, no retry (Django's default, ``CONN_MAX_AGE=0``).
- ``module-level``: one connection opened at the first request and held for the life
  of the instance, frozen or not (a module-level psycopg connection, or a pool with
  no server-side idle timeout). A broken one is replaced at the next request.
- ``serverless-pool``: a `ServerlessPool` configured for a fleet: ``max_size=1``, a
  short server-side ``idle_session_timeout`` so a frozen instance gives its slot back,
  and connect retries with backoff within the request's deadline.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import psycopg

from ..deadline import deadline_after
from ..errors import PoolTimeout
from ..pool import ServerlessPool
from ..stats import CONNECTIONS_OPENED
from .params import FleetParams

__all__ = ["STRATEGIES", "Strategy", "error_kind", "make_strategy"]

STRATEGIES: Final = ("connect-per-request", "module-level", "serverless-pool")

_QUERY: Final = "SELECT pg_sleep(%s)"


class Strategy(Protocol):
    """One instance's way of serving requests."""

    def handle(self) -> None:
        """Serve one request (its database work); raise on failure."""

    def connects(self) -> int:
        """Server connections opened so far."""

    def close(self) -> None: ...


class _ConnectPerRequest:
    def __init__(self, conninfo: str, params: FleetParams) -> None:
        self._conninfo = conninfo
        self._service = params.service
        self._connects = 0

    def handle(self) -> None:
        self._connects += 1
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            conn.execute(_QUERY, (self._service,))

    def connects(self) -> int:
        return self._connects

    def close(self) -> None:
        pass


class _ModuleLevel:
    def __init__(self, conninfo: str, params: FleetParams) -> None:
        self._conninfo = conninfo
        self._service = params.service
        self._conn: psycopg.Connection[Any] | None = None
        self._connects = 0

    def handle(self) -> None:
        if self._conn is None:
            self._connects += 1
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            self._conn.execute(_QUERY, (self._service,))
        except psycopg.Error:
            # Not even naive code keeps a broken connection: it reconnects next time.
            self._conn.close()
            self._conn = None
            raise

    def connects(self) -> int:
        return self._connects

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class _Pooled:
    def __init__(self, conninfo: str, params: FleetParams) -> None:
        self._service = params.service
        self._timeout = params.request_timeout
        self._pool = ServerlessPool(
            conninfo,
            environ={},  # the simulation must not depend on the caller's environment
            name="fleet",
            max_size=1,
            idle_session_timeout=params.idle_session_timeout,
            acquire_timeout=params.request_timeout,
            ping_after_idle=1.0,
            retry_backoff=0.02,
            retry_backoff_max=0.5,
            close_on_sigterm=False,
        )

    def handle(self) -> None:
        with deadline_after(self._timeout), self._pool.connection() as conn:
            conn.execute(_QUERY, (self._service,))

    def connects(self) -> int:
        return self._pool.stats().get(CONNECTIONS_OPENED, 0)

    def close(self) -> None:
        self._pool.close()


def make_strategy(name: str, conninfo: str, params: FleetParams) -> Strategy:
    """The strategy called `name` (one of `STRATEGIES`) for one instance."""
    if name == "connect-per-request":
        return _ConnectPerRequest(conninfo, params)
    if name == "module-level":
        return _ModuleLevel(conninfo, params)
    if name == "serverless-pool":
        return _Pooled(conninfo, params)
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


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
