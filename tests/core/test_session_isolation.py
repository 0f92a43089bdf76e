"""Nothing of one borrower's server session reaches the next, whatever SQL it ran.

Each test has two borrowers of the same server session (``max_size=1``; the backend pid is
checked) and asks PostgreSQL itself, from the second borrower or from another session,
what is left: ``pg_settings``, ``pg_locks``, ``pg_cursors``, ``pg_listening_channels()``,
``pg_prepared_statements``, the session's temporary schema, ``currval()``. The first
borrower changes the session the ways the text of a statement does not tell: SQL
functions, multi-statement text, pipelines, ``executemany()``, cursors made directly from
psycopg's classes. The control tests show the witnesses do see state left behind when the
reset is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

Borrower = Callable[[psycopg.Connection[Any]], object]


@pytest.fixture(scope="module")
def functions(postgres: PostgresServer) -> None:
    """SQL functions that change the session where the calling statement cannot show it."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as app:
        app.execute(
            """
            CREATE OR REPLACE FUNCTION iso_set_tenant(t text) RETURNS text LANGUAGE sql
                AS $$ SELECT set_config('app.tenant', t, false) $$;
            CREATE OR REPLACE FUNCTION iso_lock(k bigint) RETURNS void LANGUAGE sql
                AS $$ SELECT pg_advisory_lock(k) $$;
            CREATE OR REPLACE FUNCTION iso_scratch() RETURNS void LANGUAGE plpgsql
                AS $$ BEGIN CREATE TEMP TABLE IF NOT EXISTS iso_scratch (x int); END $$;
            CREATE SEQUENCE IF NOT EXISTS iso_seq;
            CREATE TABLE IF NOT EXISTS iso_rows (n int);
            INSERT INTO iso_rows SELECT generate_series(1, 10)
                WHERE NOT EXISTS (SELECT FROM iso_rows);
            """
        )
    postgres.execute(
        "DO $$ BEGIN CREATE ROLE iso_other NOLOGIN;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    postgres.execute("GRANT iso_other TO app")


def _twice(
    pool: ServerlessPool, first: Borrower, second: Callable[[psycopg.Connection[Any]], Any]
) -> Any:
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        first(conn)
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid, "the test needs the same server session"
        return second(conn)


def _one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _tenant(conn: psycopg.Connection[Any]) -> Any:
    # A custom variable a session defined reads as empty after RESET ALL.
    return _one(conn, "SELECT coalesce(current_setting('app.tenant', true), '')")


def _advisory_locks(postgres: PostgresServer, pid: int) -> int:
    rows = postgres.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,)
    )
    return int(rows[0][0])


def _temp_relations(conn: psycopg.Connection[Any]) -> int:
    return int(
        _one(
            conn,
            "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"
            " AND pg_my_temp_schema() <> 0",
        )
    )


@pytest.fixture
def one(make_pool: Callable[..., ServerlessPool], functions: None) -> ServerlessPool:
    return make_pool(max_size=1)


# -- the findings of the probe --------------------------------------------------------


def test_a_setting_changed_inside_a_sql_function_does_not_reach_the_next_tenant(
    one: ServerlessPool,
) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT iso_set_tenant('acme')")
        assert _tenant(conn) == "acme"

    assert _twice(one, first, _tenant) == ""


def test_an_advisory_lock_taken_inside_a_function_is_released(
    one: ServerlessPool, postgres: PostgresServer
) -> None:
    with one.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT iso_lock(4242)")
        assert _advisory_locks(postgres, pid) == 1
    # Between borrows, the idle pooled session holds nothing another session waits for.
    with postgres.superuser_connection() as other:
        assert _one(other, "SELECT pg_try_advisory_lock(4242)") is True
        other.execute("SELECT pg_advisory_unlock(4242)")
    with one.connection() as conn:
        assert conn.info.backend_pid == pid
        assert _advisory_locks(postgres, pid) == 0


def test_a_temporary_table_made_inside_a_function_is_dropped(one: ServerlessPool) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT iso_scratch()")
        assert _temp_relations(conn) >= 1

    assert _twice(one, first, _temp_relations) == 0


def test_the_next_borrower_cannot_read_the_previous_ones_currval(one: ServerlessPool) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT nextval('iso_seq')")

    def second(conn: psycopg.Connection[Any]) -> str:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT currval('iso_seq')")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT lastval()")
        return "no sequence state"

    assert _twice(one, first, second) == "no sequence state"


# The named cursor's Python object outlives its server cursor, and says so when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("declared", ["in SQL", "named psycopg cursor"])
def test_a_with_hold_cursor_cannot_be_fetched_by_the_next_borrower(
    one: ServerlessPool, declared: str
) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        if declared == "in SQL":
            conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT n FROM iso_rows ORDER BY n")
        else:
            cursor = conn.cursor("held", withhold=True)
            cursor.execute("SELECT n FROM iso_rows ORDER BY n")
            assert cursor.fetchone() == (1,)
        assert _one(conn, "SELECT count(*) FROM pg_cursors WHERE name = 'held'") == 1

    def second(conn: psycopg.Connection[Any]) -> Any:
        with pytest.raises(psycopg.errors.InvalidCursorName):
            conn.execute("FETCH 5 FROM held")
        return _one(conn, "SELECT count(*) FROM pg_cursors")

    assert _twice(one, first, second) == 0


def test_a_setting_in_multi_statement_text_is_reset(one: ServerlessPool) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1; SET work_mem = '7MB'")

    assert _twice(one, first, lambda c: _one(c, "SHOW work_mem")) == "4MB"


def test_a_setting_sent_in_a_pipeline_is_reset(one: ServerlessPool) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        with conn.pipeline():
            conn.execute("SET work_mem = '7MB'")
            conn.execute("SELECT 1")

    assert _twice(one, first, lambda c: _one(c, "SHOW work_mem")) == "4MB"


def test_advisory_locks_taken_by_executemany_are_released(
    one: ServerlessPool, postgres: PostgresServer
) -> None:
    with one.connection() as conn:
        pid = conn.info.backend_pid
        conn.cursor().executemany("SELECT pg_advisory_lock(%s)", [(1,), (2,), (3,)])
        assert _advisory_locks(postgres, pid) == 3
    with one.connection() as conn:
        assert conn.info.backend_pid == pid
        assert _advisory_locks(postgres, pid) == 0


def test_a_lock_taken_before_an_error_in_the_same_text_is_released(
    one: ServerlessPool, postgres: PostgresServer
) -> None:
    with one.connection() as conn:
        pid = conn.info.backend_pid
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT pg_advisory_lock(77); SELECT 1 / 0")
        # A session-level lock survives the failed implicit transaction.
        assert _advisory_locks(postgres, pid) == 1
    with one.connection() as conn:
        assert conn.info.backend_pid == pid
        assert _advisory_locks(postgres, pid) == 0


def test_a_setting_made_through_a_psycopg_client_cursor_is_reset(one: ServerlessPool) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        psycopg.ClientCursor(conn).execute("SET work_mem = %s", ("7MB",))

    assert _twice(one, first, lambda c: _one(c, "SHOW work_mem")) == "4MB"


# -- every category DISCARD ALL covers --------------------------------------------------


def test_settings_come_back_as_the_server_and_the_pool_set_them(
    one: ServerlessPool, postgres: PostgresServer
) -> None:
    changed = {
        "work_mem": "7MB",
        "search_path": "pg_catalog",
        "timezone": "Asia/Tokyo",
        "application_name": "borrower",
        "statement_timeout": "9s",
    }

    def first(conn: psycopg.Connection[Any]) -> None:
        for name, value in changed.items():
            conn.execute(f"SET {name} = '{value}'")

    def settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE source = 'session'"
        ).fetchall()
        return dict(rows)

    assert _twice(one, first, settings) == {}


def test_set_role_is_undone(one: ServerlessPool) -> None:
    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET ROLE iso_other")
        assert _one(conn, "SELECT current_user") == "iso_other"

    assert _twice(one, first, lambda c: _one(c, "SELECT current_user")) == "app"


def test_listen_ends_and_pending_notifications_are_dropped(
    one: ServerlessPool, postgres: PostgresServer
) -> None:
    def notify(payload: str) -> None:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as other:
            other.execute("SELECT pg_notify('iso_channel', %s)", (payload,))

    with one.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute("LISTEN iso_channel")
        notify("for the first borrower")
        conn.execute("SELECT pg_sleep(0.05)")  # the notification arrives with this answer
        assert len(conn._notifies_backlog) == 1  # type: ignore[attr-defined]
    notify("sent after the return")
    with one.connection() as conn:
        assert conn.info.backend_pid == pid
        assert _one(conn, "SELECT count(*) FROM pg_listening_channels()") == 0
        assert list(conn.notifies(timeout=0.2)) == []


def test_prepared_statements_of_the_app_and_of_psycopg_are_gone(
    make_pool: Callable[..., ServerlessPool], functions: None
) -> None:
    pool = make_pool(max_size=1, prepare_threshold=0)  # psycopg prepares at once

    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("PREPARE mine AS SELECT 1")
        assert conn.execute("SELECT %s::int", (5,)).fetchone() == (5,)
        names = {r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements")}
        assert "mine" in names
        assert any(name.startswith("_pg3_") for name in names)

    def second(conn: psycopg.Connection[Any]) -> Any:
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE mine")
        return None

    _twice(pool, first, second)
    with pool.connection() as conn:
        count = conn.execute("SELECT count(*) FROM pg_prepared_statements", prepare=False)
        assert count.fetchone() == (0,)
        # psycopg forgot its statements too: preparing again works.
        assert conn.execute("SELECT %s::int", (6,)).fetchone() == (6,)


def test_a_prepared_statement_of_the_same_name_cannot_be_planted_for_psycopg(
    make_pool: Callable[..., ServerlessPool], functions: None
) -> None:
    """A borrower that replaces psycopg's statement could answer the next one's queries."""
    pool = make_pool(max_size=1, prepare_threshold=0)
    with pool.connection() as conn:
        conn.execute("SELECT %s::int", (1,))
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()]
        for name in names:
            conn.execute(f'DEALLOCATE "{name}"')
            conn.execute(f'PREPARE "{name}" AS SELECT 666 WHERE $1::int IS NOT NULL')
    with pool.connection() as conn:
        assert conn.execute("SELECT %s::int", (1,)).fetchone() == (1,)


# -- the controls: with the reset off, the witnesses see what is left --------------------


def test_with_reset_never_the_witnesses_see_what_was_left(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer, functions: None
) -> None:
    pool = make_pool(max_size=1, reset_on_return="never")

    def first(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT iso_set_tenant('acme'), iso_lock(99), iso_scratch()")
        conn.execute("LISTEN iso_channel")
        conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1")

    def second(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        return (
            _tenant(conn),
            _advisory_locks(postgres, conn.info.backend_pid),
            _temp_relations(conn) > 0,
            _one(conn, "SELECT count(*) FROM pg_listening_channels()"),
            _one(conn, "SELECT count(*) FROM pg_cursors"),
        )

    assert _twice(pool, first, second) == ("acme", 1, True, 1, 1)


def test_the_reset_runs_on_the_server_while_the_connection_sits_in_the_pool(
    one: ServerlessPool, postgres: PostgresServer, app_name: str
) -> None:
    """The DISCARD ALL goes out at the return, not at the next borrow."""
    with one.connection() as conn:
        conn.execute("SET work_mem = '7MB'")
    seen: list[tuple[str | None, str | None]] = []
    for _ in range(200):  # bounded: the server runs it within microseconds
        seen = [(b.state, b.query) for b in postgres.backends(application_name=app_name)]
        if seen == [("idle", "DISCARD ALL")]:
            break
        time.sleep(0.01)
    assert seen == [("idle", "DISCARD ALL")]
    assert one.stats()["resets"] == 1
