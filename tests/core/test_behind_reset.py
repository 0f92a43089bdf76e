"""A borrow that comes before the answer to the last return's reset.

The return sends ``DISCARD ALL`` without waiting; when the next borrow comes first (a
loop with no gap), the borrow's first statement is sent behind the reset, in the same
pipeline, and both answers come back in one round trip. These tests hold the answer back
for certain: the backend is stopped (SIGSTOP) before the return and let go (SIGCONT)
while the next borrower's statement waits. PostgreSQL's own views and libpq's protocol
trace are the witnesses: the statement left the client before the reset's answer came,
it saw a clean session, and it ran exactly once.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
import pytest
from psycopg import pq

from serverless_pool import ServerlessPool
from serverless_pool.connection import PooledClientCursor
from serverless_pool.testing.postgres import PostgresServer

CLEAN_SESSION = (
    "SELECT current_setting('work_mem'),"
    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),"
    " (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()),"
    " (SELECT count(*) FROM pg_listening_channels())"
)
CLEAN = ("4MB", 0, 0, 0)


def _dirty(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET work_mem = '7MB'")
    conn.execute("SELECT pg_advisory_lock(4242)")
    conn.execute("CREATE TEMP TABLE behind_scratch (x int)")
    conn.execute("LISTEN behind_channel")


@contextmanager
def _answer_held_back(
    pool: ServerlessPool, postgres: PostgresServer, before_return: Callable[..., None] = _dirty
) -> Iterator[int]:
    """Borrow, run `before_return`, stop the backend, return (the reset goes out, and no
    answer comes); yields the backend's pid. The backend runs again 0.2 s later (while
    the next statement waits), or at the end of the block.

    The pool pipelines a connection's reset after a borrow came before the answer to the
    last one: a first round, with the backend stopped for 0.1 s, makes that happen.
    """
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        postgres.freeze_backend(pid)
    thaw = threading.Timer(0.1, postgres.thaw_backend, (pid,))
    thaw.start()
    with pool.connection() as conn:  # before the answer: it waits, and marks the hurry
        thaw.join()
        before_return(conn)
        assert conn.pgconn.backend_pid == pid
        postgres.freeze_backend(pid)
    thaw = threading.Timer(0.2, postgres.thaw_backend, (pid,))
    thaw.start()
    try:
        yield pid
    finally:
        thaw.cancel()
        with suppress(ProcessLookupError):  # ended meanwhile
            postgres.thaw_backend(pid)


@pytest.fixture
def one_connection(make_pool: Callable[..., ServerlessPool]) -> ServerlessPool:
    # ping_after_idle: the held-back answer must not make the borrow ping instead
    return make_pool(max_size=1, ping_after_idle=60)


def test_the_first_statement_goes_behind_the_reset_and_sees_a_clean_session(
    one_connection: ServerlessPool, postgres: PostgresServer, request: pytest.FixtureRequest
) -> None:
    pool = one_connection
    trace = tempfile.TemporaryFile()  # noqa: SIM115  # closed by the finalizer
    request.addfinalizer(trace.close)

    def dirty_then_trace(conn: psycopg.Connection[Any]) -> None:
        _dirty(conn)
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    with _answer_held_back(pool, postgres, dirty_then_trace) as pid, pool.connection() as conn:
        assert conn.execute(CLEAN_SESSION).fetchone() == CLEAN
        assert conn.pgconn.backend_pid == pid  # the same session, reset
        conn.pgconn.untrace()
    trace.seek(0)
    lines = trace.read().decode().splitlines()
    sent_statement = next(i for i, line in enumerate(lines) if "current_setting" in line)
    reset_answered = next(
        i for i, line in enumerate(lines) if line.startswith("B") and "DISCARD ALL" in line
    )
    # The statement left before the reset's answer arrived: one round trip for both.
    assert lines[sent_statement].startswith("F")
    assert sent_statement < reset_answered
    # Each went alone into its implicit transaction: a Sync after each.
    frontend = [line.split("\t")[2] for line in lines if line.startswith("F")]
    assert frontend.count("Sync") == 2
    assert pool.stats()["behind_reset"] == 1


def test_no_transaction_is_left_open_and_the_next_borrow_is_plain(
    one_connection: ServerlessPool, postgres: PostgresServer
) -> None:
    pool = one_connection
    with _answer_held_back(pool, postgres), pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # the pipeline was left: libpq and PostgreSQL both see an idle session
        assert conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        pid = conn.info.backend_pid
    state = postgres.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
    assert state == [("idle",)]
    with pool.connection() as conn:
        assert conn.execute(CLEAN_SESSION).fetchone() == CLEAN


def test_a_failing_statement_behind_the_reset_raises_its_own_error(
    one_connection: ServerlessPool, postgres: PostgresServer
) -> None:
    pool = one_connection
    with _answer_held_back(pool, postgres), pool.connection() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        # the reset still happened (it was not part of the failed statement's transaction)
        assert conn.execute(CLEAN_SESSION).fetchone() == CLEAN
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_parameters_and_client_side_binding_behind_the_reset(
    one_connection: ServerlessPool, postgres: PostgresServer
) -> None:
    pool = one_connection
    with _answer_held_back(pool, postgres), pool.connection() as conn:
        row = conn.execute("SELECT %s::text, %s::int", ("a;b", 7)).fetchone()
        assert row == ("a;b", 7)
    with _answer_held_back(pool, postgres), pool.connection() as conn:
        # Django's cursors bind on the client side: the text goes with its values in it
        cursor = PooledClientCursor(conn)
        row = cursor.execute("SELECT %s, current_setting('work_mem')", ("it's",)).fetchone()
        assert row == ("it's", "4MB")


OTHER_FIRST_OPERATIONS: dict[str, Callable[[psycopg.Connection[Any]], Any]] = {
    "several statements in one text": lambda conn: _second_result(conn),
    "a transaction": lambda conn: _in_transaction(conn),
    "a pipeline": lambda conn: _in_pipeline(conn),
    "a server-side cursor": lambda conn: _server_cursor(conn),
    "autocommit switched off first": lambda conn: _autocommit_off(conn),
    "a cursor made from psycopg's class": lambda conn: (
        psycopg.Cursor(conn).execute(CLEAN_SESSION).fetchone()
    ),
    "a prepared statement": lambda conn: conn.execute(CLEAN_SESSION, prepare=True).fetchone(),
    "a statement as bytes": lambda conn: conn.execute(CLEAN_SESSION.encode()).fetchone(),
}


def _second_result(conn: psycopg.Connection[Any]) -> Any:
    cursor = conn.execute("SELECT 1; " + CLEAN_SESSION)
    assert cursor.nextset()
    return cursor.fetchone()


def _in_transaction(conn: psycopg.Connection[Any]) -> Any:
    with conn.transaction():
        return conn.execute(CLEAN_SESSION).fetchone()


def _in_pipeline(conn: psycopg.Connection[Any]) -> Any:
    with conn.pipeline():
        cursor = conn.execute(CLEAN_SESSION)
    return cursor.fetchone()


def _server_cursor(conn: psycopg.Connection[Any]) -> Any:
    with conn.transaction(), conn.cursor(name="behind_named") as cursor:
        cursor.execute(CLEAN_SESSION)
        return cursor.fetchone()


def _autocommit_off(conn: psycopg.Connection[Any]) -> Any:
    conn.autocommit = False
    row = conn.execute(CLEAN_SESSION).fetchone()
    conn.rollback()
    return row


@pytest.mark.parametrize("operation", OTHER_FIRST_OPERATIONS, ids=list(OTHER_FIRST_OPERATIONS))
def test_other_first_operations_wait_for_the_reset_and_see_a_clean_session(
    one_connection: ServerlessPool, postgres: PostgresServer, operation: str
) -> None:
    pool = one_connection
    with _answer_held_back(pool, postgres), pool.connection() as conn:
        assert OTHER_FIRST_OPERATIONS[operation](conn) == CLEAN


def test_connection_info_before_any_statement_reads_the_reset_first(
    one_connection: ServerlessPool, postgres: PostgresServer
) -> None:
    pool = one_connection
    with _answer_held_back(pool, postgres), pool.connection() as conn:
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_a_borrow_that_runs_nothing_returns_cleanly(
    one_connection: ServerlessPool, postgres: PostgresServer
) -> None:
    pool = one_connection
    with _answer_held_back(pool, postgres), pool.connection():
        pass
    with pool.connection() as conn:
        assert conn.execute(CLEAN_SESSION).fetchone() == CLEAN
    assert pool.stats()["pool_size"] == 1


def test_a_session_ended_behind_the_reset_runs_the_statement_once_on_a_new_one(
    one_connection: ServerlessPool, postgres: PostgresServer, app_name: str
) -> None:
    """The server ends the session before it reads the reset (its goodbye is the answer):
    the statement behind it never ran, so it runs on a fresh session, exactly once."""
    pool = one_connection
    table = f"behind_{app_name.replace('-', '_')}"
    _as_app(postgres, f"CREATE TABLE {table} (request int, drawn bigint)")
    _as_app(postgres, f"CREATE SEQUENCE {table}_seq")
    try:
        with _answer_held_back(pool, postgres) as pid:
            # pending until the backend runs again, then it ends before reading anything
            postgres.execute("SELECT pg_terminate_backend(%s, 0)", (pid,))
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} VALUES (1, nextval('{table}_seq'))")
                assert conn.info.backend_pid != pid
        assert _as_app(postgres, f"SELECT request, drawn FROM {table}") == [(1, 1)]
        assert pool.stats()["replaced_dead_on_first_statement"] == 1
    finally:
        _as_app(postgres, f"DROP TABLE {table}")
        _as_app(postgres, f"DROP SEQUENCE {table}_seq")


def _as_app(postgres: PostgresServer, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def test_the_trace_of_an_ordinary_borrow_has_no_pipeline_for_the_statement(
    one_connection: ServerlessPool, request: pytest.FixtureRequest
) -> None:
    """The control: with the answer in before the borrow, the statement goes out alone,
    in the simple protocol, as psycopg sends it."""
    pool = one_connection
    trace = tempfile.TemporaryFile()  # noqa: SIM115  # closed by the finalizer
    request.addfinalizer(trace.close)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    for _ in range(50):  # until the reset's answer is in before the borrow
        with pool.connection() as conn:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            conn.execute("SELECT 'control'")
            conn.pgconn.untrace()
        trace.seek(0)
        text = trace.read().decode()
        if re.search(r"^F\t\d+\tQuery\t \"SELECT 'control'\"", text, re.M):
            break
        trace.seek(0)
        trace.truncate()
    else:
        pytest.fail("no borrow found the reset's answer in")


def test_back_to_back_borrows_send_their_first_statement_behind_the_reset(
    one_connection: ServerlessPool,
) -> None:
    """No stopped backend: a loop with no gap, as a benchmark or a busy WSGI worker runs.

    Each borrower leaves 40 temporary tables, so the reset takes the server milliseconds
    and the next borrow comes before its answer even on a loaded machine; the loop is
    bounded, and stops once borrows went behind.
    """
    pool = one_connection
    requests = 0
    for request in range(200):
        with pool.connection() as conn:
            row = conn.execute(CLEAN_SESSION + ", %s::int", (request,)).fetchone()
            assert row == (*CLEAN, request)
            conn.execute(
                "DO $$ BEGIN FOR i IN 1..40 LOOP"
                " EXECUTE format('CREATE TEMP TABLE behind_%s (x int)', i);"
                " END LOOP; END $$"
            )
            conn.execute("SET work_mem = '7MB'")
        requests += 1
        if request >= 20 and pool.stats().get("behind_reset", 0) >= 3:
            break
    stats = pool.stats()
    assert stats.get("behind_reset", 0) >= 3  # the borrows came before the reset's answer
    assert stats["connections_opened"] == 1
    assert stats["resets"] == requests
