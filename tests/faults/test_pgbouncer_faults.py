"""PgBouncer restarts, or drops its server connections, under a pool.

The pool talks to PgBouncer only; PostgreSQL (the shared test server) is never
restarted here. Only this module's PgBouncer and its own server connections are hit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.pgbouncer import PgBouncerServer
from serverless_pool.testing.postgres import PostgresServer

# Seconds a statement runs before it is stopped: long past any send.
RETRY_WINDOW = 0.1


@pytest.fixture(scope="module")
def bouncer(postgres: PostgresServer) -> Iterator[PgBouncerServer]:
    with PgBouncerServer(postgres, default_pool_size=3) as proxy:
        yield proxy


@pytest.fixture
def proxied_pool(
    bouncer: PgBouncerServer, app_name: str
) -> Iterator[Callable[..., ServerlessPool]]:
    pools: list[ServerlessPool] = []

    def make(**settings: object) -> ServerlessPool:
        settings.setdefault("application_name", app_name)
        settings.setdefault("proxy_mode", "pgbouncer-transaction")
        pool = ServerlessPool(bouncer.conninfo(), **settings)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
    if not bouncer.running:  # a failed test must not leave the next one without a proxy
        bouncer.start_process()


def _run_requests(pool: ServerlessPool, count: int) -> None:
    for i in range(count):
        with pool.connection() as conn:
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


def test_idle_connections_survive_a_pgbouncer_restart(
    bouncer: PgBouncerServer, proxied_pool: Callable[..., ServerlessPool]
) -> None:
    pool = proxied_pool(max_size=2)
    assert pool.warm(2) == 2
    bouncer.restart()
    _run_requests(pool, 20)
    stats = pool.stats()
    assert stats["replaced_closed_by_server"] >= 1
    assert stats.get("connect_errors", 0) == 0


def test_a_request_in_flight_during_a_pgbouncer_restart_fails_clearly(
    bouncer: PgBouncerServer,
    postgres: PostgresServer,
    proxied_pool: Callable[..., ServerlessPool],
    app_name: str,
) -> None:
    pool = proxied_pool(max_size=1)
    errors: list[BaseException] = []
    in_query = threading.Event()

    def request() -> None:
        with pool.connection() as conn:
            in_query.set()
            try:
                conn.execute("SELECT pg_sleep(20)")
            except psycopg.OperationalError as err:
                errors.append(err)

    thread = threading.Thread(target=request)
    thread.start()
    assert in_query.wait(10)
    assert _sleeping_backends(postgres, app_name, wait=10)
    bouncer.restart()
    thread.join(20)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert "server closed the connection" in str(errors[0]) or "terminat" in str(errors[0])
    _run_requests(pool, 5)
    assert pool.stats()["replaced_bad_state"] == 1


def test_server_connections_ended_behind_pgbouncer_do_not_reach_the_pool(
    bouncer: PgBouncerServer,
    postgres: PostgresServer,
    proxied_pool: Callable[..., ServerlessPool],
) -> None:
    pool = proxied_pool(max_size=2)
    _run_requests(pool, 5)
    before = set(bouncer.server_pids())
    assert before
    assert postgres.terminate_backends(pids=sorted(before)) == len(before)
    _run_requests(pool, 20)
    # The pool's own client connections were untouched: PgBouncer absorbed the loss.
    assert pool.stats()["connections_opened"] == 1
    assert not before & set(bouncer.server_pids())


def test_a_rolling_reconnect_is_invisible_to_the_pool(
    bouncer: PgBouncerServer, proxied_pool: Callable[..., ServerlessPool]
) -> None:
    pool = proxied_pool(max_size=2)
    _run_requests(pool, 5)
    before = set(bouncer.server_pids())
    bouncer.reconnect()
    _run_requests(pool, 20)
    assert pool.stats()["connections_opened"] == 1
    assert not before & set(bouncer.server_pids())


def test_an_admin_kill_drops_clients_and_the_pool_reconnects(
    bouncer: PgBouncerServer, proxied_pool: Callable[..., ServerlessPool]
) -> None:
    pool = proxied_pool(max_size=2)
    assert pool.warm(2) == 2
    bouncer.kill()
    _run_requests(pool, 20)
    stats = pool.stats()
    assert stats["replaced_closed_by_server"] >= 1
    assert stats["connections_opened"] >= 3


def test_a_server_connection_killed_mid_query_behind_pgbouncer_reaches_the_caller(
    bouncer: PgBouncerServer,
    postgres: PostgresServer,
    proxied_pool: Callable[..., ServerlessPool],
    app_name: str,
) -> None:
    pool = proxied_pool(max_size=1)
    _run_requests(pool, 1)

    def kill_when_running() -> None:
        busy = _sleeping_backends(postgres, app_name, wait=10)
        if busy:
            time.sleep(RETRY_WINDOW * 3)  # running for a while, then stopped
            postgres.terminate_backends(pids=busy)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
        conn.execute("SELECT pg_sleep(20)")
    killer.join(15)
    assert pool.stats().get("statement_retries", 0) == 0
    _run_requests(pool, 5)


def _sleeping_backends(postgres: PostgresServer, app_name: str, wait: float) -> list[int]:
    """Pids of this test's server sessions running pg_sleep, polled for up to `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        busy = [
            b.pid
            for b in postgres.backends(application_name=app_name)
            if b.state == "active" and "pg_sleep" in b.query
        ]
        if busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.02)
