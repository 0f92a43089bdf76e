"""What a borrower leaves behind never reaches the next borrower or stays on the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg.rows import dict_row

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer


def _states(postgres: PostgresServer, app_name: str) -> list[str | None]:
    return [b.state for b in postgres.backends(application_name=app_name)]


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_borrow_that_raised_leaves_no_transaction_open(
    postgres: PostgresServer,
    make_pool: Callable[..., ServerlessPool],
    app_name: str,
    autocommit: bool,
) -> None:
    pool = make_pool(autocommit=autocommit)

    def request_that_fails() -> None:
        with pool.connection() as conn:
            if autocommit:
                conn.execute("BEGIN")
            conn.execute("CREATE TABLE IF NOT EXISTS left_open (x int)")
            conn.execute("INSERT INTO left_open VALUES (1)")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        request_that_fails()
    assert _states(postgres, app_name) == ["idle"]
    assert pool.stats()["rollbacks"] == 1
    with pool.connection() as conn:
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute("SELECT to_regclass('left_open')").fetchone() == (None,)


def test_a_failed_statement_in_a_transaction_is_rolled_back_on_return(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool], app_name: str
) -> None:
    pool = make_pool(autocommit=False)
    with pool.connection() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
    assert _states(postgres, app_name) == ["idle"]
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_explicit_transactions_commit(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS committed (x int)")
        with conn.transaction():
            conn.execute("INSERT INTO committed VALUES (42)")
    with pool.connection() as conn:
        assert conn.execute("SELECT x FROM committed").fetchall() == [(42,)]
        conn.execute("DROP TABLE committed")


def test_connection_attributes_changed_by_a_borrower_are_restored(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.read_only = True
        conn.prepare_threshold = None
        conn.execute("SELECT 1")
    with pool.connection() as conn:
        assert conn.autocommit is True
        assert conn.isolation_level is None
        assert conn.read_only is None
        assert conn.prepare_threshold == 5


@pytest.mark.parametrize(
    "change",
    [
        lambda conn: conn.set_autocommit(False),
        lambda conn: conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ),
        lambda conn: conn.set_read_only(True),
        lambda conn: conn.set_deferrable(True),
        lambda conn: setattr(conn, "prepare_threshold", 0),
    ],
    ids=["autocommit", "isolation_level", "read_only", "deferrable", "prepare_threshold"],
)
def test_one_attribute_changed_without_a_statement_is_restored(
    make_pool: Callable[..., ServerlessPool], change: Callable[[psycopg.Connection[Any]], None]
) -> None:
    """No transaction is left open to give the change away: only the attribute differs."""
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    with pool.connection() as conn:
        change(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pool.connection() as conn:
        assert (conn.autocommit, conn.isolation_level, conn.read_only, conn.deferrable) == (
            True,
            None,
            None,
            None,
        )
        assert conn.prepare_threshold == 5


def test_the_tracking_cache_stays_bounded(pool: ServerlessPool) -> None:
    from serverless_pool import connection

    with pool.connection() as conn:
        for n in range(connection._MAX_VERDICTS + 50):
            conn.execute(f"SELECT {n}")  # literals built in: a new text every time
        assert len(connection._verdicts) <= connection._MAX_VERDICTS
        conn.execute("SET work_mem = '6MB'")  # still caught after the cache started over
    with pool.connection() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)


def test_a_cursor_class_with_its_own_execute_is_still_tracked(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    from serverless_pool.connection import PooledConnection, PooledCursorMixin

    calls: list[str] = []

    class Audited(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(str(query))
            return super().execute(query, *args, **kwargs)

    class PooledAudited(PooledCursorMixin, Audited):
        pass

    def configure(conn: PooledConnection[Any]) -> None:
        conn.cursor_factory = PooledAudited

    # The generic path (no shortcut past Audited.execute), hooks and all.
    assert PooledAudited.execute is PooledCursorMixin.execute
    pool = make_pool(max_size=1, configure=configure)
    with pool.connection() as conn:
        conn.execute("SET work_mem = '7MB'")
    with pool.connection() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)
    assert calls == ["SET work_mem = '7MB'", "DISCARD ALL", "SHOW work_mem"]  # the reset too


@pytest.mark.parametrize(
    ("dirty", "check", "clean"),
    [
        ("SET work_mem = '7MB'", "SHOW work_mem", ("4MB",)),
        ("SELECT set_config('work_mem', '7MB', false)", "SHOW work_mem", ("4MB",)),
        ("SET ROLE app", "SELECT current_user", ("app",)),
        (
            "CREATE TEMP TABLE scratch (x int)",
            "SELECT to_regclass('scratch') IS NULL",
            (True,),
        ),
        (
            "SELECT pg_advisory_lock(4242)",
            "SELECT count(*) FROM pg_locks WHERE locktype LIKE 'adv%' AND pid = pg_backend_pid()",
            (0,),
        ),
        ("CREATE TEMP TABLE made AS SELECT 1 AS x", "SELECT to_regclass('made') IS NULL", (True,)),
        ("SELECT 1 AS x INTO TEMP picked", "SELECT to_regclass('picked') IS NULL", (True,)),
        ("SELECT SET_CONFIG('work_mem', '9MB', false)", "SHOW work_mem", ("4MB",)),
        ("PREPARE mine AS SELECT 1", "SELECT count(*) FROM pg_prepared_statements", (0,)),
        ("LISTEN channel_x", "SELECT count(*) FROM pg_listening_channels()", (0,)),
    ],
)
def test_session_state_does_not_leak_to_the_next_borrower(
    make_pool: Callable[..., ServerlessPool], dirty: str, check: str, clean: tuple[object]
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute(dirty)
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid  # the same session, cleaned
        assert conn.execute(check).fetchone() == clean
    assert pool.stats()["resets"] == 1


def test_plain_queries_cost_no_reset(pool: ServerlessPool) -> None:
    for _ in range(5):
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()
            conn.execute("SELECT %s::int", (3,)).fetchone()
            conn.execute("SELECT 1 AS temperature, 'into' AS word").fetchone()
            conn.execute("CREATE TABLE IF NOT EXISTS plain (x int)")
        with pool.connection() as conn:
            conn.execute("INSERT INTO plain VALUES (1)")
            conn.execute("UPDATE plain SET x = 2")
            conn.execute("DELETE FROM plain")
    assert pool.stats()["resets"] == 5  # only after the CREATE TABLE


def test_a_session_change_after_queries_known_harmless_is_still_caught(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    # The pool skips the look-up for the query object last found harmless; any other
    # query, in the same borrow or a later one, must still be looked at.
    pool = make_pool(max_size=1)
    harmless = "SELECT 1"
    with pool.connection() as conn:
        conn.execute(harmless)
        conn.execute(harmless)
    with pool.connection() as conn:
        conn.execute(harmless)
        conn.execute("SET search_path TO pg_catalog")
        conn.execute(harmless)
    with pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)
    assert pool.stats()["resets"] == 1


def test_reset_always_and_never(make_pool: Callable[..., ServerlessPool]) -> None:
    always = make_pool(reset_on_return="always")
    for _ in range(3):
        with always.connection() as conn:
            conn.execute("SELECT 1")
    assert always.stats()["resets"] == 3

    never = make_pool(reset_on_return="never", max_size=1)
    with never.connection() as conn:
        conn.execute("SET work_mem = '7MB'")
    with never.connection() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)


def test_prepared_statements_survive_a_reset(make_pool: Callable[..., ServerlessPool]) -> None:
    """DISCARD ALL drops server-side prepared statements; psycopg must not reuse them."""
    pool = make_pool(max_size=1, prepare_threshold=0)
    for _ in range(3):
        with pool.connection() as conn:
            assert conn.execute("SELECT %s::int + 1", (1,)).fetchone() == (2,)
            conn.execute("SET work_mem = '5MB'")  # forces a DISCARD ALL on return
    assert pool.stats()["resets"] == 3


def test_session_changes_by_prepared_statements_are_caught(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    """psycopg keeps no statement text for a prepared statement; the change is still seen."""
    pool = make_pool(max_size=1, prepare_threshold=0)  # every statement prepared at once
    for round_no in range(3):
        with pool.connection() as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)
            conn.execute("SELECT set_config('work_mem', %s, false)", (f"{6 + round_no}MB",))
    assert pool.stats()["resets"] == 3


def test_session_changes_through_sql_composition_are_caught(pool: ServerlessPool) -> None:
    from psycopg import sql

    with pool.connection() as conn:
        conn.execute(sql.SQL("SELECT set_config({}, '8MB', false)").format(sql.Literal("work_mem")))
    with pool.connection() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)
    assert pool.stats()["resets"] == 1


def test_row_factory_changes_are_scoped_to_the_borrow(pool: ServerlessPool) -> None:
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        assert cur.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 AS one").fetchone() == (1,)


def test_a_connection_closed_by_its_borrower_is_replaced(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        conn.close()
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["replaced_bad_state"] == 1


def test_an_unfinished_stream_is_not_reused(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        rows = conn.cursor().stream("SELECT generate_series(1, 100000)")
        assert next(rows) == (1,)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["replaced_bad_state"] == 1
