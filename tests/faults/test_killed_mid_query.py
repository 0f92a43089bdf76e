"""A connection killed mid-query: the error reaches the caller, nothing is retried.

A statement that was sent may have run (here: it took a number from a sequence, which
no rollback gives back), so the pool must never send it again on its own. (The one
exception, the server's goodbye arriving within `RETRY_WINDOW` of the borrow's first
statement, is tested in tests/core/test_first_statement_retry.py; here the statement has
run for longer than that, as one an operator stops does.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

# Seconds a statement runs before it is stopped: long past any send.
RETRY_WINDOW = 0.1


@pytest.fixture
def sequence(postgres: PostgresServer, app_name: str) -> Iterator[str]:
    name = f"seq_{app_name.replace('-', '_')}"
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {name}")
    yield name
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP SEQUENCE {name}")


def _sequence_state(postgres: PostgresServer, name: str) -> tuple[int, bool] | None:
    with psycopg.connect(postgres.conninfo()) as conn:
        return conn.execute(f"SELECT last_value, is_called FROM {name}").fetchone()


def _kill_when_running(postgres: PostgresServer, app_name: str) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            busy = [
                b.pid
                for b in postgres.backends(application_name=app_name)
                if b.state == "active" and "pg_sleep" in b.query
            ]
            if busy:
                time.sleep(RETRY_WINDOW * 3)  # running for a while, then stopped
                postgres.terminate_backends(pids=busy)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


@pytest.mark.parametrize("first_statement", [True, False])
def test_the_error_reaches_the_caller_and_the_statement_ran_once(
    make_pool: Callable[..., ServerlessPool],
    postgres: PostgresServer,
    app_name: str,
    sequence: str,
    first_statement: bool,
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("SELECT 1")  # an idle connection to reuse, as in a warm instance
    killer = _kill_when_running(postgres, app_name)
    with pool.connection() as conn:
        if not first_statement:
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError) as caught:
            conn.execute(f"SELECT nextval('{sequence}'), pg_sleep(20)")
    killer.join(15)
    assert "terminating connection" in str(caught.value)
    # Exactly one number was taken: the statement was not sent a second time.
    assert _sequence_state(postgres, sequence) == (1, True)
    stats = pool.stats()
    assert stats.get("statement_retries", 0) == 0
    assert stats["replaced_bad_state"] == 1
    # The next request gets a working connection.
    with pool.connection() as conn:
        assert conn.execute(f"SELECT nextval('{sequence}')").fetchone() == (2,)
