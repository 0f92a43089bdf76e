"""Connecting: transient refusals are retried with backoff within the deadline;
everything else fails at once with a clear error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from serverless_pool import (
    ConnectionFailed,
    PoolTimeout,
    ServerlessPool,
    SettingsError,
    deadline_after,
)
from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer, free_port


@pytest.fixture(scope="module")
def small_server() -> Iterator[PostgresServer]:
    """max_connections=5 with 3 reserved for superusers: 2 slots for the app role."""
    with PostgresServer(max_connections=5) as server:
        yield server


@pytest.fixture
def slots_taken(small_server: PostgresServer) -> Iterator[list[psycopg.Connection]]:
    held = [psycopg.connect(small_server.conninfo()) for _ in range(2)]
    yield held
    for conn in held:
        conn.close()


def test_full_server_waits_with_backoff_and_succeeds_when_a_slot_frees(
    small_server: PostgresServer, slots_taken: list[psycopg.Connection]
) -> None:
    with ServerlessPool(small_server.conninfo(), acquire_timeout=10) as pool:
        releaser = threading.Timer(0.5, slots_taken[0].close)
        releaser.start()
        try:
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            releaser.join()
        stats = pool.stats()
    assert stats["connect_retries"] >= 1
    assert stats["connect_attempts"] == stats["connect_retries"] + 1


def test_full_server_raises_a_clear_timeout_without_a_retry_storm(
    small_server: PostgresServer, slots_taken: list[psycopg.Connection]
) -> None:
    with ServerlessPool(small_server.conninfo(), acquire_timeout=1.0) as pool:
        with pytest.raises(PoolTimeout, match="could not connect before its deadline") as info:
            pool.acquire()
        assert "remaining connection slots are reserved" in str(info.value)
        attempts = pool.stats()["connect_attempts"]
    # exponential backoff from 50 ms, capped at 1 s: a handful of attempts in one second
    assert 2 <= attempts <= 30


def test_invocation_deadline_cuts_the_wait_short(
    small_server: PostgresServer, slots_taken: list[psycopg.Connection]
) -> None:
    with ServerlessPool(small_server.conninfo(), acquire_timeout=60) as pool:
        started = time.monotonic()
        with deadline_after(0.3), pytest.raises(PoolTimeout):
            pool.acquire()
        assert time.monotonic() - started < 30  # far below the 60 s acquire timeout


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"password": "wrong-password"}, "wrong password or user"),
        ({"user": "nobody"}, "wrong password or user"),
        ({"dbname": "no_such_db"}, "unknown database"),
    ],
)
def test_wrong_credentials_fail_at_once_without_retry(
    postgres: PostgresServer, change: dict[str, str], kind: str
) -> None:
    with ServerlessPool(postgres.conninfo(**change), acquire_timeout=30) as pool:
        with pytest.raises(ConnectionFailed, match=kind) as info:
            pool.acquire()
        stats = pool.stats()
    assert stats["connect_attempts"] == 1
    assert "connect_retries" not in stats
    assert "not retried" in str(info.value)
    assert "wrong-password" not in str(info.value)
    assert APP_PASSWORD not in str(info.value)


def test_unreachable_server_fails_at_once(app_name: str) -> None:
    conninfo = f"host=127.0.0.1 port={free_port()} user=app password=x dbname=app"
    with ServerlessPool(conninfo, application_name=app_name, acquire_timeout=30) as pool:
        with pytest.raises(ConnectionFailed, match="server unreachable"):
            pool.acquire()
        assert pool.stats()["connect_attempts"] == 1


def test_a_malformed_conninfo_is_refused_at_construction_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="conninfo") as info:
        ServerlessPool("host=db password=hunter2secret port")
    assert "hunter2secret" not in str(info.value)


def test_an_unknown_connection_option_gets_a_suggestion_never_an_echo() -> None:
    # The unknown word may be the second half of a password that holds a space.
    with pytest.raises(SettingsError, match="a parameter name libpq does not know") as info:
        ServerlessPool("host=db colour=blue")
    assert "colour" not in str(info.value)
    with pytest.raises(SettingsError, match="did you mean 'dbname'") as info:
        ServerlessPool("host=db dbnmae=app")
    assert "dbnmae" not in str(info.value)


def test_no_conninfo_and_no_environment_variable_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_DATABASE_URL"):
        ServerlessPool(environ={})


def test_conninfo_from_the_environment(postgres: PostgresServer, app_name: str) -> None:
    env = {"SERVERLESS_POOL_DATABASE_URL": postgres.url()}
    with (
        ServerlessPool(environ=env, application_name=app_name) as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SELECT current_user").fetchone() == ("app",)


def test_password_provider_is_called_for_each_new_connection(
    postgres: PostgresServer, app_name: str
) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return APP_PASSWORD

    conninfo = postgres.conninfo(password=None)
    with ServerlessPool(conninfo, password=token, application_name=app_name, max_size=2) as pool:
        a, b = pool.acquire(), pool.acquire()
        pool.release(a)
        pool.release(b)
        with pool.connection():
            pass
        assert APP_PASSWORD not in repr(pool)
    assert len(calls) == 2


def test_the_pool_recovers_after_a_crash_restart(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    """An immediate (crash) stop and start: the next borrow replaces the dead session."""
    server = make_postgres()
    with ServerlessPool(server.conninfo(), application_name=app_name) as pool:
        server.restart(mode="immediate")
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
