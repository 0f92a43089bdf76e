"""Statements bounded by the deadline, on the server, at no extra round trip.

The witnesses: ``current_setting('statement_timeout')`` read by the statement itself
(what the server applied to it), ``SHOW statement_timeout`` afterwards (nothing leaked:
SHOW is never bounded), a ``pg_sleep(60)`` that the server ends at the deadline, and
libpq's protocol trace (the messages that went out, and the server's ReadyForQuery
answers: one per round trip).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import pq

from serverless_pool import (
    PooledConnection,
    ServerlessPool,
    SettingsError,
    bound_statements_by_deadline,
    deadline_after,
)
from serverless_pool.connection import PooledClientCursor, PooledRawCursor
from serverless_pool.settings import PoolSettings
from serverless_pool.statement_deadline import statement_is_bounded
from serverless_pool.testing.postgres import SUPERUSER, SUPERUSER_PASSWORD, PostgresServer

MakePool = Callable[..., ServerlessPool]
Conn = PooledConnection[Any]

BOUND = "SELECT current_setting('statement_timeout')"


def ms(value: str) -> int:
    """'4998ms' -> 4998 (the server shows a bound under 1 s, or not whole seconds, in ms)."""
    assert value.endswith("ms"), value
    return int(value[:-2])


class Trace:
    """libpq's protocol trace of one connection, read back as (direction, message) lines."""

    def __init__(self, text: str) -> None:
        self.lines: list[list[str]] = []
        for line in text.splitlines():
            if line.startswith(("F\t", "B\t")):
                self.lines.append(line.split("\t", 3))
            elif self.lines:  # a message's text that spans lines
                self.lines[-1][-1] += "\n" + line

    def sent(self, message: str) -> list[str]:
        """The arguments of each message of this type the client sent."""
        return [
            line[3].strip() if len(line) > 3 else ""
            for line in self.lines
            if line[0] == "F" and line[2] == message
        ]

    def count(self, direction: str, message: str) -> int:
        return sum(1 for line in self.lines if line[0] == direction and line[2] == message)

    @property
    def round_trips(self) -> int:
        """The server answers each Query and each Sync with one ReadyForQuery."""
        return self.count("B", "ReadyForQuery")


@contextmanager
def traced(conn: Conn) -> Iterator[list[Trace]]:
    out: list[Trace] = []
    with tempfile.TemporaryFile("w+") as file:
        conn.pgconn.trace(file.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield out
        finally:
            conn.pgconn.untrace()
            file.seek(0)
            out.append(Trace(file.read()))


# Each kind of statement the app can send, reading the bound the server applied to it.
def simple(conn: Conn) -> str:
    return conn.execute(BOUND).fetchone()[0]  # type: ignore[index]


def server_side_parameters(conn: Conn) -> str:
    return conn.execute(BOUND + " || %s", [""]).fetchone()[0]  # type: ignore[index]


def binary_results(conn: Conn) -> str:
    return conn.execute(BOUND, binary=True).fetchone()[0]  # type: ignore[index]


def prepared(conn: Conn) -> str:
    return conn.execute(BOUND + " || %s", [""], prepare=True).fetchone()[0]  # type: ignore[index]


def client_side_binding(conn: Conn) -> str:
    cursor = PooledClientCursor(conn)
    return cursor.execute(BOUND + " || %s", [""]).fetchone()[0]  # type: ignore[index]


def raw_query(conn: Conn) -> str:
    return PooledRawCursor(conn).execute(BOUND + " || $1", [""]).fetchone()[0]  # type: ignore[index]


def in_transaction(conn: Conn) -> str:
    with conn.transaction():
        return conn.execute(BOUND).fetchone()[0]  # type: ignore[index]


def autocommit_off(conn: Conn) -> str:
    conn.autocommit = False
    try:
        return conn.execute(BOUND).fetchone()[0]  # type: ignore[index]
    finally:
        conn.rollback()
        conn.autocommit = True


def in_pipeline(conn: Conn) -> str:
    with conn.pipeline():
        cursor = conn.execute(BOUND + " || %s", [""])
    return cursor.fetchone()[0]  # type: ignore[index]


def transaction_in_pipeline(conn: Conn) -> str:
    with conn.pipeline(), conn.transaction():
        cursor = conn.execute(BOUND)
    return cursor.fetchone()[0]  # type: ignore[index]


def two_phase(conn: Conn) -> str:
    conn.autocommit = False
    try:
        conn.tpc_begin(conn.xid(1, "deadline", "branch"))
        return conn.execute(BOUND).fetchone()[0]  # type: ignore[index]
    finally:
        conn.tpc_rollback()
        conn.autocommit = True


def executemany(conn: Conn) -> str:
    cursor = conn.cursor()
    cursor.executemany(BOUND + " || %s", [("",), ("",)], returning=True)
    values = [cursor.fetchone()[0]]  # type: ignore[index]
    while cursor.nextset():
        values.append(cursor.fetchone()[0])  # type: ignore[index]
    assert len(set(values)) == 1  # one implicit transaction, one bound
    return values[0]


KINDS = [
    simple,
    server_side_parameters,
    binary_results,
    prepared,
    client_side_binding,
    raw_query,
    in_transaction,
    autocommit_off,
    in_pipeline,
    transaction_in_pipeline,
    two_phase,
    executemany,
]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_every_kind_of_statement_carries_the_time_left_to_the_server(
    pool: ServerlessPool, kind: Callable[[Conn], str]
) -> None:
    with pool.connection() as conn:
        with deadline_after(5), bound_statements_by_deadline():
            bound = kind(conn)
        # Nothing outlives the statement's transaction.
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert kind(conn) == "0"  # outside the block: as before
    assert 3000 < ms(bound) <= 5000


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_the_bound_adds_no_round_trip(pool: ServerlessPool, kind: Callable[[Conn], str]) -> None:
    with pool.connection() as conn:
        kind(conn)  # psycopg's one-off work (types, a first prepare) out of the way
        with traced(conn) as without:
            kind(conn)
        with deadline_after(5), bound_statements_by_deadline(), traced(conn) as with_bound:
            kind(conn)
    assert with_bound[0].round_trips == without[0].round_trips > 0
    assert with_bound[0].count("F", "Query") == without[0].count("F", "Query")
    assert with_bound[0].count("F", "Sync") == without[0].count("F", "Sync")
    sent = " ".join(with_bound[0].sent("Query") + with_bound[0].sent("Parse"))
    assert "statement_timeout" in sent


def test_what_goes_out_for_each_protocol(pool: ServerlessPool) -> None:
    with (
        pool.connection() as conn,
        deadline_after(5),
        bound_statements_by_deadline(),
        traced(conn) as trace,
    ):
        conn.execute("SELECT 1")
        conn.execute("SELECT %s", [1])
        with conn.transaction():
            conn.execute("SELECT 2")
    queries = trace[0].sent("Query")
    assert queries[0].startswith('"SET LOCAL statement_timeout = ')
    assert queries[0].endswith(';\nSELECT 1"')
    assert queries[1].startswith('"BEGIN;\nSET LOCAL statement_timeout = ')
    assert queries[2:] == ['"SELECT 2"', '"COMMIT"']  # bounded by the BEGIN
    parses = trace[0].sent("Parse")
    assert parses[0].startswith("\"\" \"SELECT set_config('statement_timeout', '")
    assert parses[1].startswith('"" "SELECT $1"')


@pytest.mark.parametrize(
    "statement",
    ["SELECT pg_sleep(60)", "SELECT pg_sleep(%s)"],
    ids=["simple protocol", "extended protocol"],
)
@pytest.mark.parametrize("transaction", [False, True], ids=["autocommit", "transaction"])
def test_the_server_ends_a_statement_at_the_deadline(
    pool: ServerlessPool, postgres: PostgresServer, app_name: str, statement: str, transaction: bool
) -> None:
    params = [60] if "%s" in statement else None

    def run(conn: Conn) -> None:
        if transaction:
            with conn.transaction():
                conn.execute(statement, params)
        else:
            conn.execute(statement, params)

    with pool.connection() as conn:
        started = time.monotonic()
        with (
            deadline_after(1.0),
            bound_statements_by_deadline(),
            pytest.raises(psycopg.errors.QueryCanceled) as raised,
        ):
            run(conn)
        took = time.monotonic() - started
        assert raised.value.sqlstate == "57014"
        # The server stopped it: nothing runs on, and the connection serves on.
        assert [b.state for b in postgres.backends(application_name=app_name)] == ["idle"]
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert 0.9 < took < 5.0  # at the deadline (1 s), not after the 60 s sleep


def test_a_deadline_that_has_passed_gives_the_statement_one_millisecond(
    pool: ServerlessPool,
) -> None:
    with pool.connection() as conn, deadline_after(0), bound_statements_by_deadline():
        time.sleep(0.01)
        # The message carries the bound; whether even `current_setting` finishes
        # within 1 ms depends on how busy the machine is, so the answer is either.
        with traced(conn) as trace:
            try:
                answer = simple(conn)
            except psycopg.errors.QueryCanceled as canceled:
                answer = canceled.sqlstate or ""
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1)")
    assert answer in ("1ms", "57014")
    assert trace[0].sent("Query")[0].startswith('"SET LOCAL statement_timeout = 1;')


@pytest.mark.parametrize(
    "kind", [simple, server_side_parameters, in_transaction], ids=lambda kind: kind.__name__
)
def test_the_bound_never_loosens_the_pools_own_statement_timeout(
    make_pool: MakePool, kind: Callable[[Conn], str]
) -> None:
    pool = make_pool(statement_timeout=2)
    with pool.connection() as conn:
        with deadline_after(30), bound_statements_by_deadline():
            capped = kind(conn)
        with deadline_after(1), bound_statements_by_deadline():
            shorter = kind(conn)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("2s",)
    assert capped == "2s"
    assert 500 < ms(shorter) <= 1000


def test_in_a_transaction_every_statement_has_the_time_left_at_begin(
    pool: ServerlessPool,
) -> None:
    with (
        pool.connection() as conn,
        deadline_after(5),
        bound_statements_by_deadline(),
        conn.transaction(),
    ):
        first = simple(conn)
        conn.execute("SELECT pg_sleep(0.2)")
        later = simple(conn)
    assert first == later


@pytest.mark.parametrize("bounded", [False, True], ids=["not bounded", "bounded"])
def test_a_borrow_before_the_resets_answer_waits_for_it_then_sends_its_bound(
    make_pool: MakePool, postgres: PostgresServer, bounded: bool
) -> None:
    """The backend is stopped across the return: the reset's answer comes late, the
    borrow waits for it (nothing is sent behind it), then its first statement goes out
    with its bound."""
    pool = make_pool(max_size=1, ping_after_idle=60)
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        postgres.freeze_backend(pid)
    thaw = threading.Timer(0.2, postgres.thaw_backend, (pid,))
    thaw.start()
    try:
        with (
            pool.connection() as conn,
            deadline_after(5),
            bound_statements_by_deadline(bounded),
        ):
            assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
            assert conn.info.backend_pid == pid  # the same, clean, session
            seen = simple(conn)
    finally:
        thaw.cancel()
        postgres.thaw_backend(pid)
    assert pool.stats().get("replaced_reset_failed", 0) == 0
    if bounded:
        assert 3000 < ms(seen) <= 5000
    else:
        assert seen == "0"


def test_nothing_changes_without_a_deadline_or_with_the_bound_off(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        with bound_statements_by_deadline():
            assert simple(conn) == "0"
        with deadline_after(5), bound_statements_by_deadline(False):
            assert simple(conn) == "0"
            assert in_transaction(conn) == "0"
        with deadline_after(5), bound_statements_by_deadline():
            with bound_statements_by_deadline(False):
                assert simple(conn) == "0"
            assert simple(conn) != "0"


def test_statements_refused_in_a_transaction_block_are_sent_unchanged(
    pool: ServerlessPool,
) -> None:
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        conn.execute("CREATE TABLE IF NOT EXISTS deadline_vacuumed (id int)")
        # Each would fail in a transaction block (or a multi-statement message).
        conn.execute("VACUUM deadline_vacuumed")
        conn.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS deadline_idx ON deadline_vacuumed (id)"
        )
        conn.execute("DROP INDEX CONCURRENTLY deadline_idx")
        conn.execute("DROP TABLE deadline_vacuumed")
        with traced(conn) as trace:
            conn.execute("SHOW statement_timeout")
            conn.execute("DO $$ BEGIN PERFORM 1; END $$")
    assert "statement_timeout =" not in " ".join(trace[0].sent("Query"))


def test_copy_stream_and_named_cursors_are_not_bounded_outside_a_transaction(
    pool: ServerlessPool,
) -> None:
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        with conn.cursor().copy(f"COPY ({BOUND}) TO STDOUT") as copy:
            copied = b"".join(bytes(block) for block in copy)
        streamed = [row[0] for row in conn.cursor().stream(BOUND)]
        with conn.cursor("named", withhold=True) as named:
            named.execute(BOUND)
            declared = named.fetchone()[0]  # type: ignore[index]
        with conn.transaction():  # inside one, all of them are bounded by its BEGIN
            in_transaction = [row[0] for row in conn.cursor().stream(BOUND)]
    assert (copied, streamed, declared) == (b"0\n", ["0"], "0")
    assert ms(in_transaction[0]) > 3000


def test_the_cursor_sees_only_the_statements_results(pool: ServerlessPool) -> None:
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        cursor = PooledClientCursor(conn)
        cursor.execute("SELECT %s AS a, 2 AS b", ["x"])
        assert [c.name for c in cursor.description or []] == ["a", "b"]
        assert cursor.fetchall() == [("x", 2)]
        assert cursor.nextset() is None
        assert cursor._query is not None
        assert b"statement_timeout" not in cursor._query.query  # what Django logs
        cursor.execute("CREATE TEMP TABLE deadline_rows (n int)")
        cursor.execute("INSERT INTO deadline_rows SELECT generate_series(1, 3)")
        assert cursor.rowcount == 3
        assert cursor.statusmessage == "INSERT 0 3"
        plain = conn.execute("SELECT 1; SELECT 2")
        assert plain.fetchall() == [(1,)]
        assert plain.nextset()
        assert plain.fetchall() == [(2,)]
        assert plain.nextset() is None


def test_an_error_in_the_statement_leaves_the_connection_usable(pool: ServerlessPool) -> None:
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        for statement, params in (("SELECT 1/0", None), ("SELECT 1/%s", [0])):
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute(statement, params)
            assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
            assert ms(simple(conn)) > 3000


def test_statement_kinds_bounded_outside_a_transaction() -> None:
    for query in (b"SELECT 1", b"  (select 1)", b"-- why\nWITH a AS (SELECT 1) TABLE a",
                  b"/* c */ insert into t values (1)", b"EXPLAIN SELECT 1", b"VALUES (1)",
                  b"MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING"):  # fmt: skip
        assert statement_is_bounded(query), query
    for query in (b"VACUUM", b"CALL p()", b"DO $$ $$", b"SET x = 1", b"SHOW all", b"COMMIT",
                  b"CREATE INDEX CONCURRENTLY i ON t (a)", b"", b"-- only a comment"):  # fmt: skip
        assert not statement_is_bounded(query), query


def test_no_method_of_the_connection_or_cursor_is_replaced_at_run_time(
    postgres: PostgresServer,
) -> None:
    """Deadlines and the bound are flags the one seam reads: the classes stay as made.
    In a process of its own, so that nothing before it has entered a deadline."""
    script = textwrap.dedent(
        f"""
        from serverless_pool import ServerlessPool, deadline_after, bound_statements_by_deadline
        from serverless_pool._psycopg import connection, cursor

        classes = [connection.PooledConnection, *(
            getattr(cursor, name) for name in cursor.__all__
        )]
        before = [dict(vars(cls)) for cls in classes]
        pool = ServerlessPool({postgres.conninfo()!r})
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        with deadline_after(5), bound_statements_by_deadline(), pool.connection() as conn:
            conn.execute("SELECT 1")
            with conn.transaction():
                conn.execute("SELECT %s", (1,))
        assert [dict(vars(cls)) for cls in classes] == before
        pool.close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


# -- deadline_function: the bound through a SQL function (RDS Proxy) ------------------

# The function of docs/managed_postgres.md, which also leaves a mark of its call.
FUNCTION_SQL = """
CREATE SCHEMA IF NOT EXISTS deadline_test;
CREATE OR REPLACE FUNCTION deadline_test.bound_statement(ms integer) RETURNS void
LANGUAGE sql AS $$
    SELECT set_config('statement_timeout', least(
        ms,
        nullif(extract(epoch FROM current_setting('statement_timeout')::interval) * 1000, 0)
    )::int::text, true);
    SELECT set_config('deadline_test.set_by', 'function', true);
$$;
GRANT USAGE ON SCHEMA deadline_test TO PUBLIC;
"""


@pytest.fixture(scope="module")
def deadline_function(postgres: PostgresServer) -> str:
    with psycopg.connect(postgres.conninfo(SUPERUSER, SUPERUSER_PASSWORD), autocommit=True) as conn:
        conn.execute(FUNCTION_SQL)
    return "deadline_test.bound_statement"


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_deadline_function_sets_the_bound_instead_of_set_local(
    make_pool: MakePool, deadline_function: str, kind: Callable[[Conn], str]
) -> None:
    pool = make_pool(deadline_function=deadline_function)
    set_by = "current_setting('deadline_test.set_by', true)"
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        bound = kind(conn)
        with traced(conn) as trace:
            kind(conn)
    sent = " ".join(trace[0].sent("Query") + trace[0].sent("Parse"))
    assert "deadline_test.bound_statement(" in sent
    assert "SET LOCAL" not in sent
    assert "set_config" not in sent
    assert 3000 < ms(bound) <= 5000
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        assert conn.execute(f"SELECT {set_by}").fetchone() == ("function",)


@pytest.mark.parametrize(("session", "expected"), [("1500ms", "1500ms"), ("1min", None)])
def test_the_documented_deadline_function_keeps_a_shorter_statement_timeout(
    make_pool: MakePool, deadline_function: str, session: str, expected: str | None
) -> None:
    pool = make_pool(deadline_function=deadline_function)
    with pool.connection() as conn:
        conn.execute(f"SET statement_timeout = '{session}'")
        with deadline_after(5), bound_statements_by_deadline():
            seen = [kind(conn) for kind in (simple, server_side_parameters, in_transaction)]
    if expected is None:  # the time left is shorter
        assert all(3000 < ms(value) <= 5000 for value in seen), seen
    else:
        assert seen == [expected] * 3


def test_a_missing_deadline_function_fails_the_statement_clearly(make_pool: MakePool) -> None:
    pool = make_pool(deadline_function="no_such_bound")
    with pool.connection() as conn, deadline_after(5), bound_statements_by_deadline():
        for run in (simple, server_side_parameters, in_transaction):
            with pytest.raises(psycopg.errors.UndefinedFunction, match="no_such_bound"):
                run(conn)
            if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                conn.rollback()
        with bound_statements_by_deadline(False):
            assert simple(conn) == "0"


@pytest.mark.parametrize("name", ["bound; DROP TABLE x", "a.b.c", "1fn", "fn()", ""])
def test_deadline_function_must_be_a_function_name(name: str) -> None:
    with pytest.raises(
        SettingsError, match="deadline_function: expected the name of a SQL function"
    ):
        PoolSettings.load({"deadline_function": name}, environ={})


def test_deadline_function_from_the_environment() -> None:
    env = {"SERVERLESS_POOL_DEADLINE_FUNCTION": "ops.bound_statement"}
    assert PoolSettings.load(environ=env).deadline_function == "ops.bound_statement"
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_DEADLINE_FUNCTION"):
        PoolSettings.load(environ={"SERVERLESS_POOL_DEADLINE_FUNCTION": "x y"})
