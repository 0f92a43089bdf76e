"""The server restarts while requests are in flight.

In-flight requests fail with a clear error; the pool recovers by itself (no process
restart, no manual drain) and later requests succeed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.errors import ConnectionFailed
from serverless_pool.testing.postgres import PostgresServer

# Seconds a statement runs before it is stopped: long past any send.
RETRY_WINDOW = 0.1


def test_in_flight_requests_fail_clearly_and_later_requests_succeed(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    pool = ServerlessPool(server.conninfo(), max_size=4, application_name=app_name)
    try:
        assert pool.warm(4) == 4
        errors: list[BaseException] = []
        results: list[object] = []
        started = threading.Barrier(5)

        def in_flight() -> None:
            with pool.connection() as conn:
                started.wait(10)
                try:
                    results.append(conn.execute("SELECT pg_sleep(30)").fetchone())
                except psycopg.OperationalError as err:
                    errors.append(err)

        threads = [threading.Thread(target=in_flight) for _ in range(4)]
        for thread in threads:
            thread.start()
        started.wait(10)
        _wait_until_sleeping(server, app_name, 4)
        # Running for a while: a statement cut off in its first RETRY_WINDOW would be
        # sent again (it committed nothing); these have been running for longer.
        time.sleep(RETRY_WINDOW * 3)
        server.restart(mode="fast")
        for thread in threads:
            thread.join(20)
        assert not any(thread.is_alive() for thread in threads)

        assert results == []
        assert len(errors) == 4
        for err in errors:
            text = str(err).lower()
            assert "terminating connection" in text or "server closed the connection" in text
        # The broken connections were thrown away on return, not kept.
        assert pool.stats()["pool_size"] == 0

        for i in range(20):
            with pool.connection() as conn:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        stats = pool.stats()
        assert stats["replaced_bad_state"] == 4
        assert stats["connections_opened"] == 5
    finally:
        pool.close()


def test_idle_connections_after_a_restart_are_replaced_before_any_statement(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    pool = ServerlessPool(server.conninfo(), max_size=3, application_name=app_name)
    try:
        assert pool.warm(3) == 3
        server.restart(mode="fast")
        for i in range(30):
            with pool.connection() as conn:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        stats = pool.stats()
        assert stats["replaced_closed_by_server"] >= 1
        assert stats.get("connect_errors", 0) == 0
    finally:
        pool.close()


def test_a_stopped_server_fails_fast_and_a_started_one_is_used_again(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    pool = ServerlessPool(server.conninfo(), max_size=1, application_name=app_name)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        server.stop_server()
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="nothing listens there"), pool.connection():
            pass
        assert time.monotonic() - started < 10  # no retry loop: refused is not transient
        assert pool.stats()["connect_attempts"] == 2
        server.start_server()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def _wait_until_sleeping(server: PostgresServer, app_name: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = [
            b
            for b in server.backends(application_name=app_name)
            if b.state == "active" and "pg_sleep" in b.query
        ]
        if len(busy) == count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} requests did not reach the server in time")
