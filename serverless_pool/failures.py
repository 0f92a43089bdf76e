"""Which connection failures are worth retrying.

libpq reports a refused connection as text only (no SQLSTATE reaches the client), so
the server's and PgBouncer's messages are matched. Only refusals that go away by
themselves are retried: the server is full, or starting up or shutting down. A wrong
password, an unknown database or role, or an unreachable host fail at once: retrying
them would only turn a clear error into a slow one.
"""

from __future__ import annotations

from typing import Final

__all__ = ["failure_kind", "is_login_rejected", "is_transient"]

_TRANSIENT: Final = (
    "too many clients",  # PostgreSQL, SQLSTATE 53300
    "too many connections",  # SQLSTATE 53300, per role or database
    "remaining connection slots are reserved",  # SQLSTATE 53300
    "the database system is starting up",  # SQLSTATE 57P03
    "the database system is shutting down",  # 57P03
    "the database system is in recovery mode",  # 57P03
    "the database system is not yet accepting connections",  # 57P03
    "no more connections allowed",  # PgBouncer max_client_conn
    "pgbouncer cannot connect to server",  # PgBouncer, server down or full
    # libpq's target_session_attrs found a read-only server (a replica, or a demoted
    # writer while DNS still points at it after a failover): the writer may come back.
    "session is read-only",
    "server is in hot standby mode",
)

# The server refused the login itself (SQLSTATE 28P01 and 28000): new credentials (a
# rotated secret, a new IAM token, even another user) may be let in.
_LOGIN_REJECTED: Final = (
    "password authentication failed",  # 28P01
    "pam authentication failed",  # 28P01 from RDS for an IAM token
    "sasl authentication failed",  # PgBouncer
    "no pg_hba.conf entry",  # 28000
    "pg_hba.conf rejects connection",  # 28000
    "is not permitted to log in",  # 28000
)

_KINDS: Final = (
    ("password authentication failed", "wrong password or user"),
    ("pam authentication failed", "login token rejected (PAM)"),
    ("sasl authentication failed", "wrong password or user"),  # PgBouncer's wording
    ("no such database", "unknown database"),  # PgBouncer's wording
    ("no password supplied", "no password given"),
    ('role "', "unknown role"),
    ('database "', "unknown database"),
    ("could not translate host name", "unknown host"),
    ("failed to resolve host", "unknown host"),  # psycopg resolves names itself
    ("connection refused", "server unreachable: nothing listens there"),
    ("timeout expired", "server unreachable: connection timed out"),
    ("no route to host", "server unreachable"),
    ("network is unreachable", "server unreachable"),
    ("ssl", "TLS negotiation failed"),
    ("certificate", "TLS certificate rejected"),
    ("pg_hba.conf", "rejected by the server's pg_hba.conf"),
)


def is_transient(err: BaseException) -> bool:
    """Whether a connect failure may succeed if tried again shortly."""
    text = str(err).lower()
    return any(marker in text for marker in _TRANSIENT)


def is_login_rejected(err: BaseException) -> bool:
    """Whether the server refused the credentials themselves (28P01, 28000)."""
    text = str(err).lower()
    return any(marker in text for marker in _LOGIN_REJECTED)


def failure_kind(err: BaseException) -> str:
    """A short name for why a connection attempt failed, for the error message."""
    text = str(err).lower()
    for marker, kind in _KINDS:
        if marker in text:
            return kind
    return "connection refused by the server"
