"""A dead connection is never handed to user code.

The server ends sessions behind the pool's back (an operator, idle_session_timeout, a
restart); the next borrow must still succeed, without a failed statement.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from serverless_pool import ConnectionFailed, ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

# Seconds a statement runs before it is stopped: long past any send.
RETRY_WINDOW = 0.1


def test_a_thousand_borrows_each_after_the_server_ended_the_backend(
    postgres: PostgresServer, pool: ServerlessPool
) -> None:
    failures = 0
    pid = None
    with postgres.superuser_connection() as admin:
        for _ in range(1000):
            if pid is not None:
                assert postgres.terminate_backends(pids=[pid], admin=admin) == 1
            try:
                with pool.connection() as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                    pid = conn.info.backend_pid
            except psycopg.Error:
                failures += 1
    assert failures == 0
    stats = pool.stats()
    # Found at the borrow, or (the goodbye arriving just after it) at the first statement.
    replaced = stats.get("replaced_closed_by_server", 0)
    assert replaced + stats.get("replaced_dead_on_first_statement", 0) == 999
    assert stats["connections_opened"] == 1000


def test_backend_ended_between_borrow_and_first_statement_is_replaced_transparently(
    postgres: PostgresServer, pool: ServerlessPool
) -> None:
    with pool.connection():
        pass
    with postgres.superuser_connection() as admin, pool.connection() as conn:
        old_pid = conn.info.backend_pid
        postgres.terminate_backends(pids=[old_pid], admin=admin)
        time.sleep(0.05)  # the app did other work before its first query
        assert conn.execute("SELECT pg_backend_pid()").fetchone() != (old_pid,)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    stats = pool.stats()
    assert stats["replaced_dead_on_first_statement"] == 1
    assert stats["statement_retries"] == 1


def test_first_statement_inside_transaction_block_gets_a_live_session(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool]
) -> None:
    pool = make_pool(autocommit=False)
    with pool.connection() as conn:
        conn.commit()
    with postgres.superuser_connection() as admin, pool.connection() as conn:
        postgres.terminate_backends(pids=[conn.info.backend_pid], admin=admin)
        time.sleep(0.05)
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_statement_that_was_sent_is_never_retried(
    postgres: PostgresServer, pool: ServerlessPool
) -> None:
    """Killed mid-query: the statement may have run, so the error reaches the caller."""
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS mid_query_runs (n int)")
        conn.execute("TRUNCATE mid_query_runs")
    with postgres.superuser_connection() as admin:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
            import threading

            def kill_soon() -> None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    row = admin.execute(
                        "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()
                    if row and row[0] == "active":
                        time.sleep(RETRY_WINDOW * 3)  # running for a while, then stopped
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        return
                    time.sleep(0.01)

            killer = threading.Thread(target=kill_soon)
            killer.start()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("INSERT INTO mid_query_runs SELECT 1 FROM pg_sleep(2)")
            killer.join(10)
        assert pool.stats().get("statement_retries", 0) == 0
    with pool.connection() as conn:
        # the killed transaction rolled back and was not run a second time
        assert conn.execute("SELECT count(*) FROM mid_query_runs").fetchone() == (0,)
        conn.execute("DROP TABLE mid_query_runs")


def test_a_long_idle_gap_costs_one_ping(make_pool: Callable[..., ServerlessPool]) -> None:
    pool = make_pool(ping_after_idle=0.05)
    with pool.connection():
        pass
    with pool.connection():
        pass
    assert pool.stats().get("pings", 0) == 0  # back to back: the socket check is enough
    time.sleep(0.1)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["pings"] == 1


def test_a_silent_server_fails_the_ping_quickly_and_the_pool_reconnects(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool]
) -> None:
    pool = make_pool(ping_after_idle=0, ping_timeout=0.3)
    with pool.connection() as conn:
        frozen_pid = conn.info.backend_pid
    postgres.freeze_backend(frozen_pid)
    try:
        started = time.monotonic()
        with pool.connection() as conn:
            assert conn.info.backend_pid != frozen_pid
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - started < 10  # bounded: no hang on the silent socket
        assert pool.stats()["replaced_ping_failed"] == 1
    finally:
        postgres.thaw_backend(frozen_pid)


def test_the_pool_serves_again_after_a_server_restart(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    with ServerlessPool(server.conninfo(), application_name=app_name) as pool:
        with pool.connection() as conn:
            before = conn.info.backend_pid
        server.restart()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != before
        assert pool.stats()["replaced_closed_by_server"] == 1


def test_while_the_server_is_down_borrows_fail_clearly_then_recover(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    with ServerlessPool(server.conninfo(), application_name=app_name) as pool:
        with pool.connection():
            pass
        server.stop_server()
        with pytest.raises(ConnectionFailed, match="server unreachable"):
            pool.acquire()
        server.start_server()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
