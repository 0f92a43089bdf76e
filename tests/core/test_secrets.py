"""Passwords and password providers (e.g. RDS IAM auth tokens).

A provider is called for every new connection, so a short-lived token is always fresh,
and neither its value nor a conninfo password ever shows in logs, reprs, errors or
stats.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

ROLE = "token_role"


class TokenProvider:
    """Stands in for an IAM token generator: a new value each time it is rotated."""

    def __init__(self, postgres: PostgresServer) -> None:
        self.postgres = postgres
        self.calls = 0
        self.issued: list[str] = []
        self.rotate()

    def rotate(self) -> None:
        self.current = "tok-" + secrets.token_urlsafe(24)
        self.issued.append(self.current)
        self.postgres.execute(f"ALTER ROLE {ROLE} PASSWORD '{self.current}'")

    def __call__(self) -> str:
        self.calls += 1
        return self.current


@pytest.fixture(scope="module")
def token_role(postgres: PostgresServer) -> Iterator[str]:
    postgres.execute(f"CREATE ROLE {ROLE} LOGIN")
    yield ROLE
    postgres.execute(f"DROP ROLE {ROLE}")


@pytest.fixture
def provider(postgres: PostgresServer, token_role: str) -> TokenProvider:
    return TokenProvider(postgres)


def _all_text(pool: ServerlessPool, caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join([caplog.text, repr(pool), str(pool.stats()), str(pool.settings)])


def test_the_provider_is_called_for_every_new_connection_and_only_then(
    postgres: PostgresServer, provider: TokenProvider, app_name: str
) -> None:
    pool = ServerlessPool(
        postgres.conninfo(user=ROLE, password=None), password=provider, max_size=3,
        application_name=app_name, environ={},
    )  # fmt: skip
    try:
        assert pool.warm(3) == 3
        assert provider.calls == 3
        for _ in range(20):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        assert provider.calls == 3  # reused connections need no new token
        # The token changes (IAM tokens last 15 minutes); open connections are fine,
        # and the replacements for connections the server ended use the new one.
        provider.rotate()
        assert postgres.terminate_backends(application_name=app_name) == 3
        for _ in range(5):
            with pool.connection() as conn:
                assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
        stats = pool.stats()
    finally:
        pool.close()
    assert provider.calls == stats["connections_opened"]
    assert provider.calls >= 4


def test_neither_a_provided_password_nor_a_conninfo_password_is_ever_shown(
    postgres: PostgresServer,
    provider: TokenProvider,
    app_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, psycopg's included
    provided = ServerlessPool(
        postgres.conninfo(user=ROLE, password=None), password=provider, max_size=1,
        application_name=app_name, ping_after_idle=0, environ={},
    )  # fmt: skip
    in_conninfo = ServerlessPool(
        postgres.conninfo(user=ROLE, password=provider.current), max_size=1,
        application_name=app_name, environ={},
    )  # fmt: skip
    try:
        for pool in (provided, in_conninfo):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
                shown_conn = f"{conn!r} {conn.info.dsn}"
            postgres.terminate_backends(application_name=app_name)
            with pool.connection() as conn:  # a replaced connection, logged at INFO
                conn.execute("SELECT 1")
            assert provider.current not in shown_conn
            assert provider.current not in _all_text(pool, caplog)
        # A failing connection: the password is wrong now.
        old = provider.current
        provider.rotate()
        postgres.terminate_backends(application_name=app_name)
        with pytest.raises(psycopg.OperationalError) as caught, in_conninfo.connection():
            pass
        assert old not in str(caught.value)
        assert old not in _all_text(in_conninfo, caplog)
    finally:
        provided.close()
        in_conninfo.close()
    assert caplog.records  # the check above looked at real log output
    for token in provider.issued:
        assert token not in caplog.text


def test_a_failing_provider_reaches_the_caller_and_is_not_retried(
    postgres: PostgresServer, token_role: str, app_name: str
) -> None:
    calls = 0

    def broken() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("the token service is down")

    pool = ServerlessPool(
        postgres.conninfo(user=ROLE, password=None), password=broken,
        application_name=app_name, environ={},
    )  # fmt: skip
    try:
        with pytest.raises(RuntimeError, match="token service is down"), pool.connection():
            pass
        assert calls == 1
        assert pool.stats()["pool_size"] == 0  # no slot leaked by the failure
    finally:
        pool.close()
