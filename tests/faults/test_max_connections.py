"""``max_connections`` exhausted: back off within the deadline, then a clear error.

The attempts are counted twice: by the pool's stats and by the server's own log of
connections received, so a retry storm would show whatever the pool believes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.deadline import deadline_after
from serverless_pool.errors import PoolTimeout
from serverless_pool.testing.postgres import PostgresServer

APP_SLOTS = 2  # max_connections 5 minus 3 reserved for superusers


@pytest.fixture(scope="module")
def small_server() -> Iterator[PostgresServer]:
    settings = {"log_connections": "on", "log_line_prefix": "'%a|'"}
    with PostgresServer(max_connections=APP_SLOTS + 3, settings=settings) as server:
        yield server


@pytest.fixture
def full_server(small_server: PostgresServer) -> Iterator[list[psycopg.Connection[Any]]]:
    """Every slot an ordinary role may use is taken by someone else."""
    holders = [psycopg.connect(small_server.conninfo()) for _ in range(APP_SLOTS)]
    yield holders
    for conn in holders:
        conn.close()


def _received(server: PostgresServer) -> int:
    return sum("connection received:" in line for line in server.iter_log())


def test_a_full_server_costs_a_few_spaced_attempts_then_a_clear_timeout(
    small_server: PostgresServer, full_server: list[psycopg.Connection[Any]], app_name: str
) -> None:
    pool = ServerlessPool(
        small_server.conninfo(),
        application_name=app_name,
        acquire_timeout=1.5,
        retry_backoff=0.05,
        retry_backoff_max=0.4,
    )
    try:
        received_before = _received(small_server)
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as caught, pool.connection():
            pass
        elapsed = time.monotonic() - started
        received = _received(small_server) - received_before
        stats = pool.stats()
    finally:
        pool.close()
    message = str(caught.value)
    assert "could not connect before its deadline" in message
    assert "remaining connection slots are reserved" in message
    attempts = stats["connect_attempts"]
    assert f"refused {attempts} attempt(s)" in message
    # Backoff, not a storm: a tight loop would make thousands of attempts in 1.5 s.
    assert 2 <= attempts <= 40
    assert stats["connect_retries"] == attempts - 1
    assert stats["timeouts"] == 1
    assert received == attempts  # the server saw exactly what the pool counted
    assert elapsed < 10  # it gave up at its deadline, not never


def test_a_slot_freed_before_the_deadline_is_taken(
    small_server: PostgresServer, full_server: list[psycopg.Connection[Any]], app_name: str
) -> None:
    pool = ServerlessPool(
        small_server.conninfo(), application_name=app_name, acquire_timeout=10, retry_backoff=0.05
    )
    releaser = threading.Timer(0.5, full_server[0].close)
    releaser.start()
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        stats = pool.stats()
    finally:
        releaser.join()
        pool.close()
    assert stats["connect_retries"] >= 1
    assert stats["connections_opened"] == 1
    assert stats.get("timeouts", 0) == 0


def test_the_invocation_deadline_cuts_the_backoff_short(
    small_server: PostgresServer, full_server: list[psycopg.Connection[Any]], app_name: str
) -> None:
    pool = ServerlessPool(
        small_server.conninfo(), application_name=app_name, acquire_timeout=30, retry_backoff=0.05
    )
    try:
        started = time.monotonic()
        with deadline_after(0.5), pytest.raises(PoolTimeout), pool.connection():
            pass
        elapsed = time.monotonic() - started
    finally:
        pool.close()
    # Bounded by the 0.5 s deadline, not the 30 s acquire_timeout (generous margin).
    assert elapsed < 10
