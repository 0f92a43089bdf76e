"""The PgBouncer test harness itself: what the other proxy and fault tests rely on."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.errors import ConnectionFailed
from serverless_pool.testing.pgbouncer import PgBouncerServer
from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer


def test_it_pools_in_transaction_mode_with_scram_secrets_only(pgbouncer: PgBouncerServer) -> None:
    assert pgbouncer.tmpdir is not None
    auth_file = (pgbouncer.tmpdir / "userlist.txt").read_text()
    assert "SCRAM-SHA-256$" in auth_file
    assert APP_PASSWORD not in auth_file
    with psycopg.connect(pgbouncer.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    pools = [p for p in pgbouncer.show("pools") if p["database"] == "app"]
    assert [p["pool_mode"] for p in pools] == ["transaction"]


@pytest.mark.parametrize("user", ["app", "no_such_user"])
def test_a_wrong_password_behind_pgbouncer_fails_fast_and_says_so(
    pgbouncer: PgBouncerServer, make_proxy_pool: Callable[..., ServerlessPool], user: str
) -> None:
    secret = "not-the-password-123"
    pool = make_proxy_pool(
        pgbouncer.conninfo(user=user, password=secret), proxy_mode="pgbouncer-transaction"
    )
    with pytest.raises(ConnectionFailed) as caught, pool.connection():
        pass
    # PgBouncer words it "SASL authentication failed"; the pool says what it means.
    assert "wrong password or user, not retried" in str(caught.value)
    assert secret not in str(caught.value)
    assert pool.stats()["connect_attempts"] == 1


def test_admin_errors_name_the_command(pgbouncer: PgBouncerServer) -> None:
    with pytest.raises(RuntimeError, match="'SHOW NOTHING' failed"):
        pgbouncer.admin("SHOW NOTHING")


def test_session_mode_plain_passwords_and_a_clean_stop(logged_postgres: PostgresServer) -> None:
    proxy = PgBouncerServer(logged_postgres, pool_mode="session", plain_passwords=True)
    proxy.start()
    tmpdir = proxy.tmpdir
    try:
        with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
            conn.execute("SET work_mem = '9MB'")
            # Session mode: the same server session for the whole client connection.
            assert conn.execute("SHOW work_mem").fetchone() == ("9MB",)
        assert [p["pool_mode"] for p in proxy.show("pools") if p["database"] == "app"] == [
            "session"
        ]
    finally:
        proxy.stop()
    assert not proxy.running
    assert tmpdir is not None
    assert not tmpdir.exists()


def test_an_unknown_pool_mode_is_refused(logged_postgres: PostgresServer) -> None:
    with pytest.raises(ValueError, match="pool_mode: expected one of"):
        PgBouncerServer(logged_postgres, pool_mode="transactions")
