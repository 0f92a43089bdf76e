"""A statement the app sent runs at most once, and never in someone else's session.

The cases an adversary found, against a real server with the default settings:

- a reset that fails (cancelled by the borrower's own ``statement_timeout``, or ``out of
  shared memory`` when the lock table is full) must not let the next borrower's first
  statement run in the dirty session, nor run twice: the next borrow waits for the
  reset's answer, and a failed reset means a fresh session before anything is sent;
- a ``CALL`` of a procedure that commits, its backend terminated while it runs, is never
  run a second time: the app gets `StatementOutcomeUnknown` (which is also psycopg's
  ``AdminShutdown``);
- a statement the server provably never ran (its idle-session timeout fired as the
  thawed instance borrowed) is still sent again on a fresh session, with no error.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from serverless_pool import ServerlessPool, StatementOutcomeUnknown
from serverless_pool.testing.postgres import PostgresServer


@pytest.fixture
def writes(postgres: PostgresServer, app_name: str) -> Iterator[str]:
    """A table each borrower B writes its identity to, and a role borrower A becomes."""
    table = f"writes_{app_name.replace('-', '_')}"
    postgres.execute(
        "DO $$ BEGIN CREATE ROLE amo_other NOLOGIN;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    postgres.execute("GRANT amo_other TO app")
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (request int, who text, tenant text)")
        conn.execute(f"GRANT ALL ON {table} TO amo_other")
    yield table
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}")


def _rows(conninfo: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(f"SELECT request, who, tenant FROM {table} ORDER BY 1").fetchall()


def _dirty_borrower(tables: int) -> Callable[[psycopg.Connection[Any]], None]:
    """Borrower A: another role, a tenant, many temporary tables, a short timeout."""

    def run(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET ROLE amo_other")
        conn.execute("SET app.tenant = 'A'")
        with conn.pipeline():
            for n in range(tables):
                conn.execute(f"CREATE TEMP TABLE amo_t{n} (x int)")
        conn.execute("SET statement_timeout = '20ms'")

    return run


def _write_b(conn: psycopg.Connection[Any], table: str, request: int) -> None:
    conn.execute(
        f"INSERT INTO {table} VALUES (%s, current_user, current_setting('app.tenant', true))",
        (request,),
    )


@pytest.mark.slow
@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["back to back", "with a pause"])
def test_a_reset_cancelled_by_the_borrowers_timeout_never_lets_the_next_statement_in(
    make_pool: Callable[..., ServerlessPool],
    postgres: PostgresServer,
    writes: str,
    pause: float,
) -> None:
    pool = make_pool(max_size=1)
    outcomes: list[str] = []
    for request in range(1, 6):
        with pool.connection() as conn:
            _dirty_borrower(2000)(conn)
        if pause:
            time.sleep(pause)
        try:
            with pool.connection() as conn:
                _write_b(conn, writes, request)
            outcomes.append("ok")
        except psycopg.Error as err:  # a clear error is allowed; a wrong write is not
            outcomes.append(type(err).__name__)
    rows = _rows(postgres.conninfo(), writes)
    written = [row[0] for row in rows]
    # Each of B's statements ran exactly once (or failed cleanly), as B, with no tenant.
    assert written == sorted(set(written))
    assert all(row[1:] == ("app", None) for row in rows), rows
    assert len(written) == outcomes.count("ok")
    stats = pool.stats()
    # The resets failed (DISCARD ALL of 2,000 tables takes longer than 20 ms): each
    # borrow after one got a fresh session.
    assert stats.get("replaced_reset_failed", 0) >= 1, stats


@pytest.mark.slow
@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["back to back", "with a pause"])
def test_a_reset_that_runs_out_of_shared_memory_never_lets_the_next_statement_in(
    make_postgres: Callable[..., PostgresServer], app_name: str, pause: float
) -> None:
    """Lock-table exhaustion: DISCARD ALL must lock every temporary table it drops."""
    server = make_postgres(settings={"max_locks_per_transaction": "10"}, max_connections=5)
    server.execute(
        "DO $$ BEGIN CREATE ROLE amo_other NOLOGIN;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    server.execute("GRANT amo_other TO app")
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE amo_writes (request int, who text, tenant text)")
        conn.execute("GRANT ALL ON amo_writes TO amo_other")
    outcomes: list[str] = []
    with ServerlessPool(server.conninfo(), max_size=1, application_name=app_name) as pool:
        for request in range(1, 6):
            with pool.connection() as conn:
                conn.execute("SET ROLE amo_other")
                conn.execute("SET app.tenant = 'A'")
                # One transaction each, so that each fits the small lock table; dropping
                # them all at once does not. (The next session that uses the temporary
                # schema must drop the tables the failed one left, and may run out too.)
                for n in range(300):
                    try:
                        conn.execute(f"CREATE TEMP TABLE amo_t{n} (x int)")
                    except errors.OutOfMemory:
                        break
            if pause:
                time.sleep(pause)
            try:
                with pool.connection() as conn:
                    _write_b(conn, "amo_writes", request)
                outcomes.append("ok")
            except psycopg.Error as err:
                outcomes.append(type(err).__name__)
        stats = pool.stats()
    rows = _rows(server.conninfo(), "amo_writes")
    written = [row[0] for row in rows]
    assert written == sorted(set(written))
    # Never A's role or tenant. A session that once ran SET app.tenant keeps the name
    # defined after DISCARD ALL, with an empty value (docs/session_reset.md).
    assert all(row[1] == "app" and row[2] in (None, "") for row in rows), rows
    assert len(written) == outcomes.count("ok") >= 1
    # A login while the lock table is full is refused: a clear error, nothing written.
    assert set(outcomes) <= {"ok", "ConnectionFailed"}, outcomes
    assert stats.get("replaced_reset_failed", 0) >= 1, stats


@pytest.fixture
def payments(postgres: PostgresServer, app_name: str) -> Iterator[str]:
    """A procedure that records a payment, commits it, then works for a while."""
    table = f"payments_{app_name.replace('-', '_')}"
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (payment int)")
        conn.execute(
            f"CREATE PROCEDURE {table}_pay(n int) LANGUAGE plpgsql AS $$"
            f" BEGIN INSERT INTO {table} VALUES (n); COMMIT; PERFORM pg_sleep(0.03); END $$"
        )
    yield table
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP PROCEDURE {table}_pay")
        conn.execute(f"DROP TABLE {table}")


@pytest.mark.slow
def test_a_terminated_call_that_committed_never_runs_twice(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer, payments: str
) -> None:
    """1,000 tries, the backend terminated at times spread over the procedure's run."""
    pool = make_pool(max_size=1)
    rng = random.Random(22)
    outcomes = {"ok": 0, "unknown": 0}
    unknown: list[StatementOutcomeUnknown] = []
    with postgres.superuser_connection() as admin:
        for payment in range(1, 1001):
            with pool.connection() as conn:
                pid = conn.info.backend_pid
            delay = rng.uniform(0.0, 0.04)
            killer = threading.Timer(
                delay, admin.execute, ("SELECT pg_terminate_backend(%s)", (pid,))
            )
            killer.start()
            try:
                with pool.connection() as conn:
                    conn.execute(f"CALL {payments}_pay({payment})")
                outcomes["ok"] += 1
            except StatementOutcomeUnknown as err:
                unknown.append(err)
            finally:
                killer.join()
    with psycopg.connect(postgres.conninfo()) as conn:
        runs = conn.execute(
            f"SELECT payment, count(*) FROM {payments} GROUP BY payment HAVING count(*) > 1"
        ).fetchall()
    assert runs == []  # no payment made twice
    outcomes["unknown"] = len(unknown)
    # psycopg's own class too, with the server's diagnostic, and the original as cause.
    assert all(isinstance(err, errors.AdminShutdown) for err in unknown)
    assert {err.sqlstate for err in unknown} == {"57P01"}
    assert all(isinstance(err.__cause__, errors.AdminShutdown) for err in unknown)
    # The kills landed both ways: some calls finished, some were cut off.
    assert outcomes["ok"] > 0, outcomes
    assert outcomes["unknown"] > 0, outcomes
    assert pool.stats().get("statement_retries", 0) <= outcomes["ok"]


@pytest.mark.slow
def test_a_thousand_borrows_that_meet_the_idle_session_timeout_all_succeed(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer, writes: str
) -> None:
    """The server's timeout (set on the connection string, unknown to the pool) fires as
    the borrow starts: 57P05 comes only to a backend waiting for a command, so the
    statement is sent again on a fresh session, and no error reaches the app."""
    timeout_ms = 20
    pool = make_pool(
        conninfo=postgres.conninfo(options=f"-c idle_session_timeout={timeout_ms}"),
        max_size=1,
        ping_after_idle=60,
    )
    rng = random.Random(5)
    errors_seen: list[str] = []
    unknown: list[int] = []
    for request in range(1, 1001):
        try:
            with pool.connection() as conn:
                _write_b(conn, writes, request)
        except StatementOutcomeUnknown:
            # The goodbye lost on the way: a statement that reaches a socket the backend
            # has closed makes the kernel answer with a reset, which discards the
            # goodbye still unread, so nothing proves the statement never ran.
            unknown.append(request)
        except psycopg.Error as err:
            errors_seen.append(f"{type(err).__name__}: {err}")
        time.sleep(rng.uniform(0.8, 1.3) * timeout_ms / 1000)
    assert errors_seen == []
    assert len(unknown) <= 10, unknown
    written = [row[0] for row in _rows(postgres.conninfo(), writes)]
    assert written == [n for n in range(1, 1001) if n not in unknown]
    stats = pool.stats()
    # Some timeouts fired just before the statement went out, and it was sent again.
    assert stats.get("replaced_dead_on_first_statement", 0) > 0, stats
