"""Direct mode: session changes made by one borrower never reach the next one.

With ``max_size=1`` both borrowers get the same server session (the tests check the
backend pid), so anything left behind would show.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

# Each case: what a borrower does, then a query whose answer is True while it lingers.
CASES = {
    "set": (
        ["SET search_path TO pg_catalog, public", "SET work_mem = '7MB'"],
        "SELECT current_setting('work_mem') = '7MB'",
    ),
    "set_config": (
        ["SELECT set_config('app.tenant', 'tenant-a', false)"],
        "SELECT coalesce(current_setting('app.tenant', true), '') = 'tenant-a'",
    ),
    "temporary_table": (
        ["CREATE TEMPORARY TABLE scratch (id int)", "INSERT INTO scratch VALUES (1)"],
        "SELECT to_regclass('pg_temp.scratch') IS NOT NULL",
    ),
    "advisory_lock": (
        ["SELECT pg_advisory_lock(4242)"],
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
        " AND pid = pg_backend_pid() AND objid = 4242)",
    ),
    "listen": (
        ["LISTEN some_channel"],
        "SELECT EXISTS (SELECT 1 FROM pg_listening_channels() AS c WHERE c = 'some_channel')",
    ),
    "prepare": (
        ["PREPARE mine AS SELECT 1"],
        "SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = 'mine')",
    ),
}


def _borrow_twice(pool: ServerlessPool, changes: list[str], probe: str) -> tuple[bool, bool]:
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        for statement in changes:
            conn.execute(statement)
        lingering_inside = conn.execute(probe).fetchone()
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid, "the test needs the same server session"
        lingering_after = conn.execute(probe).fetchone()
    assert lingering_inside is not None
    assert lingering_after is not None
    return bool(lingering_inside[0]), bool(lingering_after[0])


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", ["auto", "always"])
def test_session_changes_do_not_leak_to_the_next_borrower(
    make_pool: Callable[..., ServerlessPool], case: str, mode: str
) -> None:
    pool = make_pool(max_size=1, reset_on_return=mode)
    changes, probe = CASES[case]
    assert _borrow_twice(pool, changes, probe) == (True, False)
    assert pool.stats()["resets"] >= 1


@pytest.mark.parametrize("case", ["set", "temporary_table", "advisory_lock"])
def test_with_reset_never_the_changes_do_leak(
    make_pool: Callable[..., ServerlessPool], case: str
) -> None:
    """The control: the probes do see state that is left behind."""
    pool = make_pool(max_size=1, reset_on_return="never")
    changes, probe = CASES[case]
    assert _borrow_twice(pool, changes, probe) == (True, True)


def test_auto_reset_skips_the_round_trip_after_plain_queries(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=1, reset_on_return="auto")
    for i in range(20):
        with pool.connection() as conn:
            conn.execute("SELECT %s::int", (i,))
            conn.execute("CREATE TABLE IF NOT EXISTS plain_t (id int)")
            conn.execute("DROP TABLE plain_t")
    # CREATE TABLE counts as a possible session change (CREATE TEMP looks the same).
    assert pool.stats()["resets"] == 20
    pool2 = make_pool(max_size=1, reset_on_return="auto")
    for i in range(20):
        with pool2.connection() as conn:
            conn.execute("SELECT %s::int", (i,))
    assert pool2.stats().get("resets", 0) == 0


def test_server_side_timeouts_survive_the_reset(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=1, statement_timeout=3, reset_on_return="always")
    with pool.connection() as conn:
        conn.execute("SET statement_timeout = '9s'")
    with pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("3s",)


def test_an_open_transaction_and_its_locks_end_on_return(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    pool = make_pool(max_size=1, autocommit=False)
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT pg_advisory_xact_lock(777)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    locks = postgres.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", (pid,)
    )
    assert locks == [(0,)]
    assert pool.stats()["rollbacks"] == 1


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_prepared_statements_keep_working_across_many_resets(
    make_pool: Callable[..., ServerlessPool], mode: str
) -> None:
    """Regression: the pool's DISCARD ALL got prepared itself after a few resets, and
    psycopg then used prepared statements the server had dropped."""
    pool = make_pool(max_size=1, reset_on_return=mode, prepare_threshold=1)
    for i in range(60):
        with pool.connection() as conn:
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            assert conn.execute("SELECT %s::int * 2", (i,)).fetchone() == (i * 2,)
            conn.execute("SET work_mem = '5MB'")
    stats = pool.stats()
    assert stats["resets"] == 60
    assert stats["connections_opened"] == 1
