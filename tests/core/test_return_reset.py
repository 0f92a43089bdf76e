"""What a borrower leaves behind never reaches the next borrower or stays on the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg.rows import dict_row

from serverless_pool import PooledConnection, ServerlessPool
from serverless_pool.connection import PooledCursorMixin
from serverless_pool.testing.postgres import PostgresServer


def _notify(postgres: PostgresServer, channel: str, payload: str) -> None:
    """NOTIFY in the app's database (notifications do not cross databases)."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", (channel, payload))


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
        conn.prepare_threshold = 0
        conn.prepared_max = 3
        conn.execute("SELECT 1")
    with pool.connection() as conn:
        assert conn.autocommit is True
        assert conn.isolation_level is None
        assert conn.read_only is None
        assert conn.prepare_threshold is None
        assert conn.prepared_max == 100


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
        assert conn.prepare_threshold is None


def test_row_and_cursor_factories_set_on_the_connection_are_restored(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        pooled_cursor = conn.cursor_factory
        conn.row_factory = dict_row
        conn.cursor_factory = psycopg.ClientCursor
        conn.server_cursor_factory = psycopg.ServerCursor
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 AS one").fetchone() == (1,)
        # The pool's own cursor classes are back, hooks and all.
        assert conn.cursor_factory is pooled_cursor
        assert isinstance(conn.cursor(), PooledCursorMixin)
        with conn.cursor("named") as named:
            assert isinstance(named, PooledCursorMixin)


def test_notice_and_notify_handlers_of_a_borrower_are_removed(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    pool = make_pool(max_size=1)
    notices: list[str] = []
    notified: list[str] = []
    with pool.connection() as conn:
        conn.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        conn.add_notify_handler(lambda n: notified.append(n.payload))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'first'; END $$")
    assert notices == ["first"]
    with pool.connection() as conn:
        conn.execute("DO $$ BEGIN RAISE NOTICE 'second'; END $$")
        conn.execute("LISTEN rr_channel")
        _notify(postgres, "rr_channel", "hello")
        conn.execute("SELECT pg_sleep(0.05)")
        assert [n.payload for n in conn.notifies(timeout=0.5, stop_after=1)] == ["hello"]
    assert notices == ["first"]
    assert notified == []


def test_notifications_received_but_not_read_do_not_reach_the_next_borrower(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("LISTEN rr_unread")
        _notify(postgres, "rr_unread", "secret")
        conn.execute("SELECT pg_sleep(0.05)")  # the notification arrives, unread
        assert len(conn._notifies_backlog) == 1  # type: ignore[attr-defined]
    with pool.connection() as conn:
        assert list(conn.notifies(timeout=0.2)) == []


def test_adapters_registered_on_the_connection_are_dropped(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    from psycopg.types.string import TextLoader

    class ShoutingLoader(TextLoader):
        def load(self, data: Any) -> str:
            return str(super().load(data)).upper()

    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.adapters.register_loader("text", ShoutingLoader)
        assert conn.execute("SELECT 'quiet'::text").fetchone() == ("QUIET",)
    with pool.connection() as conn:
        assert conn.execute("SELECT 'quiet'::text").fetchone() == ("quiet",)


def test_types_registered_on_the_connection_are_dropped(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    from psycopg.types.enum import EnumInfo, register_enum

    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("DROP TYPE IF EXISTS rr_mood; CREATE TYPE rr_mood AS ENUM ('ok', 'sad')")
        info = EnumInfo.fetch(conn, "rr_mood")
        assert info is not None
        register_enum(info, conn)
        assert conn.adapters.types.get("rr_mood") is not None
    with pool.connection() as conn:
        assert conn.adapters.types.get("rr_mood") is None
        assert conn.execute("SELECT 'ok'::rr_mood").fetchone() == ("ok",)
        conn.execute("DROP TYPE rr_mood")


def test_adapters_set_up_by_the_configure_callback_are_kept(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    from psycopg.types.string import TextLoader

    class Marked(TextLoader):
        def load(self, data: Any) -> str:
            return "marked:" + str(super().load(data))

    def configure(conn: PooledConnection[Any]) -> None:
        conn.adapters.register_loader("text", Marked)

    pool = make_pool(max_size=1, configure=configure)
    for _ in range(3):
        with pool.connection() as conn:
            assert conn.execute("SELECT 'x'::text").fetchone() == ("marked:x",)
            conn.adapters.register_loader("text", TextLoader)  # the borrower undoes it
            assert conn.execute("SELECT 'x'::text").fetchone() == ("x",)


def test_a_two_phase_transaction_left_by_a_borrower_closes_the_connection(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.autocommit = False
        conn.tpc_begin(conn.xid(1, "rr-gtrid", "rr-bqual"))
        conn.execute("SELECT 1")
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["replaced_bad_state"] == 1


def test_reset_never_keeps_the_server_session_as_it_was(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    never = make_pool(reset_on_return="never", max_size=1)
    with never.connection() as conn:
        conn.execute("SET work_mem = '7MB'")
    with never.connection() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
    assert never.stats().get("resets", 0) == 0


def test_prepared_statements_keep_working_across_many_resets(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    """DISCARD ALL drops the server's prepared statements: psycopg must forget them too."""
    pool = make_pool(max_size=1, prepare_threshold=1)
    for i in range(60):
        with pool.connection() as conn:
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)  # prepared now
            assert conn.execute("SELECT %s::int * 2", (i,)).fetchone() == (i * 2,)
    stats = pool.stats()
    assert stats["resets"] == 60
    assert stats["connections_opened"] == 1


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
