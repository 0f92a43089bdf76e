"""Writers after a failover: never a read-only server, never a silent retry of COMMIT.

After an RDS Multi-AZ or Aurora failover, the writer's DNS name takes 15-20 s to follow,
and the old writer comes back as a read-only replica: a new connection may reach it and
every write then fails with SQLSTATE 25006 while the connection looks healthy. A pool
for writes (the default; ``read_only=True`` says otherwise):

- asks libpq for a writable server (``target_session_attrs=read-write``, direct mode):
  a read-only one is refused at login ("session is read-only"), which the pool retries
  with backoff within the deadline, and of a multi-host connection string the first
  writable host is taken;
- refuses a server that reports itself read-only at login in any mode (PostgreSQL 14+
  reports ``in_hot_standby`` and ``default_transaction_read_only`` in the handshake, so
  this costs no round trip);
- closes a connection whose statement failed with 25006 because the server is
  read-only, so the next borrow reconnects.

And a connection lost while ``COMMIT`` was in flight raises `CommitOutcomeUnknown`
(`serverless_pool._psycopg.first_operation.watch_commit`): the transaction may or may
not have committed, and only the application can decide what to do about it. It is
never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg import pq

from .errors import SettingsError

if TYPE_CHECKING:
    from .connection import PooledConnection
    from .settings import PoolSettings

__all__ = ["check_writable", "found_read_only", "session_attrs"]

logger = logging.getLogger("serverless_pool")

_OK: Final = pq.ConnStatus.OK
_READ_ONLY_TARGETS: Final = ("read-only", "standby", "prefer-standby")


def session_attrs(settings: PoolSettings, params: Mapping[str, object]) -> dict[str, object]:
    """``target_session_attrs`` for a new connection of a pool for writes, in direct mode.

    Behind a proxy the proxy picks the server, per transaction for PgBouncer: the check
    would test whichever server answered it, so it is left out there.
    """
    asked = params.get("target_session_attrs")
    if settings.read_only:
        return {}
    if asked in _READ_ONLY_TARGETS:
        raise SettingsError(
            f"conninfo: target_session_attrs={asked} asks for a read-only server, but the"
            " pool is for writes; set read_only=true for a pool of reads"
        )
    if asked not in (None, "") or not settings.uses_session_state:
        return {}
    return {"target_session_attrs": "read-write"}


def server_read_only(pgconn: pq.abc.PGconn) -> bool:
    """Whether the server said at login that this session cannot write (PostgreSQL 14+)."""
    return (
        pgconn.parameter_status(b"in_hot_standby") == b"on"
        or pgconn.parameter_status(b"default_transaction_read_only") == b"on"
    )


def check_writable(conn: PooledConnection[Any]) -> None:
    """Refuse a new connection of a pool for writes that landed on a read-only server.

    Raised as libpq words it for ``target_session_attrs``, so the pool retries it as it
    retries libpq's own refusal.
    """
    if server_read_only(conn.pgconn):
        conn.close()
        raise psycopg.OperationalError(
            "the server reports it is read-only at login: session is read-only"
        )


def found_read_only(conn: PooledConnection[Any]) -> None:
    """A statement failed with 25006: close the connection if the server is to blame.

    Not when the application asked for a read-only transaction itself, and not on a
    server that says it accepts writes (a ``SET TRANSACTION READ ONLY`` of the app's).
    """
    on_read_only = conn._sp_on_read_only
    if on_read_only is None or conn.read_only:
        return
    pgconn = conn.pgconn
    if (
        pgconn.parameter_status(b"in_hot_standby") == b"off"
        and pgconn.parameter_status(b"default_transaction_read_only") == b"off"
    ):
        return
    on_read_only(conn)
