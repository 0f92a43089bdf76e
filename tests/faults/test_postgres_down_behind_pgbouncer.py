"""PostgreSQL goes down behind PgBouncer.

PgBouncer keeps accepting clients, so the failure shows up late and in PgBouncer's
words: a query waits for a server connection until ``query_wait_timeout``; a login to a
freshly started PgBouncer hangs until PostgreSQL answers. The caller must get an error
in bounded time, and the pool must serve again once PostgreSQL is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.deadline import deadline_after
from serverless_pool.errors import PoolError
from serverless_pool.testing.pgbouncer import PgBouncerServer
from serverless_pool.testing.postgres import PostgresServer


def test_a_hanging_login_is_cut_at_the_deadline(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    with PgBouncerServer(server) as proxy:
        pool = ServerlessPool(
            proxy.conninfo(),
            proxy_mode="pgbouncer-transaction",
            connect_timeout=30,
            acquire_timeout=30,
            application_name=app_name,
            environ={},
        )
        try:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
            pool.drain()
            server.stop_server()
            # A fresh PgBouncer has no server parameters to greet a client with yet, so
            # it holds the login until PostgreSQL answers: the connect hangs.
            proxy.restart()
            started = time.monotonic()
            with deadline_after(1), pytest.raises(PoolError) as caught, pool.connection():
                pass
            elapsed = time.monotonic() - started
        finally:
            pool.close()
            server.start_server()  # the fixture stops a running server
    assert "timeout" in str(caught.value) or "timed out" in str(caught.value)
    # libpq's shortest connect_timeout is 2 s; without the deadline this takes 30 s.
    assert elapsed < 10


def test_requests_fail_while_postgres_is_down_and_succeed_once_it_is_back(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    settings = {"query_wait_timeout": "2", "server_login_retry": "1"}
    with PgBouncerServer(server, settings=settings) as proxy:
        pool = ServerlessPool(
            proxy.conninfo(),
            proxy_mode="pgbouncer-transaction",
            application_name=app_name,
            environ={},
        )
        try:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
            server.stop_server()
            errors: list[str] = []
            for _ in range(2):
                with pytest.raises(psycopg.Error) as caught, pool.connection() as conn:
                    conn.execute("SELECT 1")
                errors.append(str(caught.value))
            server.start_server()
            served = 0
            deadline = time.monotonic() + 20
            while served < 5 and time.monotonic() < deadline:
                try:
                    with pool.connection() as conn:
                        assert conn.execute("SELECT 1").fetchone() == (1,)
                    served += 1
                except psycopg.OperationalError:
                    time.sleep(0.2)  # PgBouncer waits server_login_retry before retrying
        finally:
            pool.close()
    assert "query_wait_timeout" in errors[0]
    assert "server login has been failing" in errors[1]
    assert served == 5
