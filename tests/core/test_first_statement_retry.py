"""The server ends the session at the moment of a borrow: no statement runs twice, and
one the server provably never ran is sent again with no error reaching user code.

The session ends as it does in production: ``idle_session_timeout`` firing as a thawed
instance borrows, ``pg_terminate_backend`` (an operator, a failover) just before a borrow
or between the borrow and its first statement. Each request inserts its own number; the
table, read at the end, shows every request committed at most once, and exactly once
where the pool saw the session's end before it sent the statement.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from serverless_pool import (
    ServerlessPool,
    StatementOutcomeUnknown,
    bound_statements_by_deadline,
    deadline_after,
)
from serverless_pool import connection as pooled
from serverless_pool._psycopg import first_operation
from serverless_pool.testing.postgres import PostgresServer


@pytest.fixture
def runs(postgres: PostgresServer, app_name: str) -> Iterator[str]:
    """A table of request numbers, and a sequence each insert draws from."""
    table = f"runs_{app_name.replace('-', '_')}"
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (request int PRIMARY KEY, drawn bigint)")
        conn.execute(f"CREATE SEQUENCE {table}_seq")
    yield table
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"DROP SEQUENCE {table}_seq")


def _committed(postgres: PostgresServer, table: str) -> list[int]:
    with psycopg.connect(postgres.conninfo()) as conn:
        return [r[0] for r in conn.execute(f"SELECT request FROM {table} ORDER BY request")]


def _insert(conn: psycopg.Connection[Any], table: str, request: int) -> None:
    conn.execute(f"INSERT INTO {table} VALUES (%s, nextval('{table}_seq'))", (request,))


def test_a_thousand_borrows_with_the_backend_ended_0_to_2_ms_before(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer, runs: str
) -> None:
    """Ended just before the borrow: the pool sees the goodbye at the borrow or just
    before the send, and the request succeeds; where the goodbye is still on its way
    when the statement leaves, the app is told the outcome is unknown, and the
    statement is not sent again. Either way no request is committed twice."""
    pool = make_pool(max_size=1)
    rng = random.Random(13)
    errors: list[str] = []
    unknown: list[int] = []
    with postgres.superuser_connection() as admin:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        for request in range(1, 1001):
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            pause = rng.choice([0.0, 0.0, rng.uniform(0, 0.002)])
            if pause:
                time.sleep(pause)
            try:
                with pool.connection() as conn:
                    _insert(conn, runs, request)
                    pid = conn.info.backend_pid
            except StatementOutcomeUnknown:
                unknown.append(request)
                with pool.connection() as conn:
                    pid = conn.info.backend_pid
            except psycopg.Error as err:
                errors.append(f"{type(err).__name__}: {err}")
    assert errors == []
    committed = _committed(postgres, runs)
    # The backends were idle when ended: the requests told "unknown" never ran either.
    assert committed == [n for n in range(1, 1001) if n not in unknown]
    # Most goodbyes are seen before the send (about 90% here); the rest were in flight.
    assert len(unknown) < 500, len(unknown)
    stats = pool.stats()
    # Every ended session was found and replaced, at the borrow (its goodbye read with
    # the reset's answer, or by the ping) or at the first statement.
    found = sum(value for key, value in stats.items() if key.startswith("replaced_"))
    assert found >= 1000 - len(unknown), str(stats)
    assert stats["connections_opened"] - stats["connections_closed"] == stats["pool_size"]


def test_idle_session_timeout_firing_as_the_borrow_starts(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer, runs: str
) -> None:
    """The thaw: the server's idle timeout and the next request arrive together.

    The pool set the timeout, so it knows when the server will end the session: a
    connection idle for nearly that long is closed rather than lent.
    """
    timeout = 0.1  # the pool lends a connection idle for up to half of it (SERVER_IDLE_MARGIN)
    pool = make_pool(max_size=1, idle_session_timeout=timeout, ping_after_idle=60)
    rng = random.Random(7)
    errors: list[str] = []
    for request in range(1, 201):
        try:
            with pool.connection() as conn:
                _insert(conn, runs, request)
        except psycopg.Error as err:
            errors.append(f"{type(err).__name__}: {err}")
        time.sleep(rng.uniform(timeout * 0.3, timeout * 1.2))
    assert errors == []
    assert _committed(postgres, runs) == list(range(1, 201))
    stats = pool.stats()
    assert stats["replaced_server_idle_timeout"] > 50
    # Sessions idle for less than the limit were lent: the timeout did not fire on them.
    assert stats.get("replaced_closed_by_server", 0) == 0


def _terminate(postgres: PostgresServer, pid: int) -> None:
    postgres.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _plain(conn: psycopg.Connection[Any], table: str) -> None:
    _insert(conn, table, 1)


def _transaction(conn: psycopg.Connection[Any], table: str) -> None:
    with conn.transaction():
        _insert(conn, table, 1)


def _pipeline(conn: psycopg.Connection[Any], table: str) -> None:
    with conn.pipeline():
        _insert(conn, table, 1)
        conn.execute("SELECT 1")


def _executemany(conn: psycopg.Connection[Any], table: str) -> None:
    conn.cursor().executemany(
        f"INSERT INTO {table} VALUES (%s, nextval('{table}_seq'))", [(1,), (2,)]
    )


def _copy(conn: psycopg.Connection[Any], table: str) -> None:
    with conn.cursor().copy(f"COPY {table} (request, drawn) FROM STDIN") as copy:
        copy.write_row((1, 1))


def _stream(conn: psycopg.Connection[Any], table: str) -> None:
    rows = conn.cursor().stream(
        f"INSERT INTO {table} VALUES (1, nextval('{table}_seq')) RETURNING request"
    )
    assert list(rows) == [(1,)]


def _server_cursor(conn: psycopg.Connection[Any], table: str) -> None:
    with conn.transaction(), conn.cursor("named") as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone() == (0,)
    _insert(conn, table, 1)


def _no_autocommit(conn: psycopg.Connection[Any], table: str) -> None:
    conn.autocommit = False
    _insert(conn, table, 1)
    conn.commit()


def _client_cursor(conn: psycopg.Connection[Any], table: str) -> None:
    with pooled.PooledClientCursor(conn) as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (%s, nextval('{table}_seq'))", (1,))


def _raw_cursor(conn: psycopg.Connection[Any], table: str) -> None:
    with pooled.PooledRawCursor(conn) as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES ($1, nextval('{table}_seq'))", (1,))


PATHS = {
    "execute": (_plain, [1]),
    "transaction": (_transaction, [1]),
    "pipeline": (_pipeline, [1]),
    "executemany": (_executemany, [1, 2]),
    "copy": (_copy, [1]),
    "stream": (_stream, [1]),
    "server_cursor": (_server_cursor, [1]),
    "autocommit_off": (_no_autocommit, [1]),
    "client_cursor": (_client_cursor, [1]),
    "raw_cursor": (_raw_cursor, [1]),
}


# The paths whose first exchange is a BEGIN, which commits nothing: sent again whatever
# ended the session under it.
STARTS_WITH_BEGIN = {"transaction", "server_cursor", "autocommit_off"}


@pytest.mark.parametrize("bounded", [False, True], ids=["", "bounded by the deadline"])
@pytest.mark.parametrize("found", ["before sending", "after sending"])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_first_operation_of_every_path_goes_to_a_live_session(
    make_pool: Callable[..., ServerlessPool],
    postgres: PostgresServer,
    runs: str,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    found: str,
    bounded: bool,
) -> None:
    """The backend ends between the borrow and its first operation (with statements
    bounded by the deadline too: the bound travels with the retried statement)."""
    if found == "after sending":
        # No second look at the socket before the send: the goodbye is then the first
        # answer to what was sent.
        monkeypatch.setattr(first_operation, "RECHECK_AFTER", 3600.0)
    operation, expected = PATHS[path]
    retried = found == "before sending" or path in STARTS_WITH_BEGIN
    pool = make_pool(max_size=1)
    with pool.connection():
        pass
    with pool.connection() as conn:
        before = conn.info.backend_pid
        _terminate(postgres, before)
        postgres.wait_process_gone(before)
        with deadline_after(30), bound_statements_by_deadline(bounded):
            if retried:
                operation(conn, runs)
                assert conn.info.backend_pid != before
            elif path == "pipeline":
                # Statements queued in a pipeline are never sent again: psycopg's error.
                with pytest.raises(psycopg.OperationalError):
                    operation(conn, runs)
            else:
                # An autocommit statement answered by the goodbye may have run: the app
                # is told so, and it is not sent again. The error is also what psycopg
                # raised (AdminShutdown, or a lost connection where libpq read the end
                # of the socket first).
                with pytest.raises(StatementOutcomeUnknown) as caught:
                    operation(conn, runs)
                assert isinstance(caught.value, type(caught.value.__cause__))
    assert _committed(postgres, runs) == (expected if retried else [])
    stats = pool.stats()
    assert stats.get("replaced_dead_on_first_statement", 0) == int(retried)
    assert stats.get("statement_retries", 0) == int(retried)


def test_a_second_statement_is_never_retried(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer, runs: str
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        _insert(conn, runs, 1)
        _terminate(postgres, conn.info.backend_pid)
        postgres.wait_process_gone(conn.info.backend_pid)
        with pytest.raises(psycopg.OperationalError):
            _insert(conn, runs, 2)
    assert _committed(postgres, runs) == [1]
    assert pool.stats().get("statement_retries", 0) == 0


def test_a_crash_with_no_goodbye_after_the_statement_left_is_not_retried(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    """A bare EOF: the server may have run the statement before it died."""
    import os
    import signal
    import threading

    server = make_postgres()
    with ServerlessPool(server.conninfo(), max_size=1, application_name=app_name) as pool:
        with pool.connection():
            pass
        with pool.connection() as conn:
            pid = conn.info.backend_pid
            # The backend dies mid-statement without a word (as in an OOM kill).
            killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
            killer.start()
            with pytest.raises(psycopg.OperationalError) as caught:
                conn.execute("SELECT pg_sleep(5)")
            killer.join()
            assert "terminating connection" not in str(caught.value)
        assert pool.stats().get("statement_retries", 0) == 0
