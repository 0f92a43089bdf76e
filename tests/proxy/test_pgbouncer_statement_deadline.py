"""Statements bounded by the deadline behind PgBouncer in transaction mode.

One server connection for two clients: whatever one client's bound is, the other,
which runs its statements on the very same server session, never sees it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from serverless_pool import ServerlessPool, bound_statements_by_deadline, deadline_after
from serverless_pool.testing.pgbouncer import PgBouncerServer
from serverless_pool.testing.postgres import PostgresServer

BOUND = "SELECT current_setting('statement_timeout'), pg_backend_pid()"
ROUNDS = 100


@pytest.fixture(scope="module")
def one_server_connection(logged_postgres: PostgresServer) -> Iterator[PgBouncerServer]:
    with PgBouncerServer(logged_postgres, default_pool_size=1) as proxy:
        yield proxy


@pytest.fixture
def two_clients(
    one_server_connection: PgBouncerServer, make_proxy_pool: Callable[..., ServerlessPool]
) -> tuple[ServerlessPool, ServerlessPool]:
    conninfo = one_server_connection.conninfo()
    return (
        make_proxy_pool(conninfo, proxy_mode="pgbouncer-transaction", max_size=1),
        make_proxy_pool(conninfo, proxy_mode="pgbouncer-transaction", max_size=1),
    )


def _bounded_reads(conn: psycopg.Connection[tuple[str, int]]) -> list[tuple[str, int]]:
    """The bound the server applied, by each protocol and in a transaction."""
    rows = [
        conn.execute(BOUND).fetchone(),
        conn.execute(BOUND + " || %s", [""]).fetchone(),
    ]
    with conn.transaction():
        rows.append(conn.execute(BOUND).fetchone())
    return [row for row in rows if row is not None]


def test_one_clients_bound_never_reaches_the_other_on_the_same_server_session(
    two_clients: tuple[ServerlessPool, ServerlessPool],
) -> None:
    bounded, plain = two_clients
    with bounded.connection() as a, plain.connection() as b:
        for _ in range(3):
            with deadline_after(5), bound_statements_by_deadline():
                seen_a = _bounded_reads(a)  # type: ignore[arg-type]
            seen_b = _bounded_reads(b)  # type: ignore[arg-type]
            shown_b = b.execute("SHOW statement_timeout").fetchone()
            assert all(setting.endswith("ms") and setting != "0" for setting, _ in seen_a)
            assert [setting for setting, _ in seen_b] == ["0", "0", "0"]
            assert shown_b == ("0",)
    # The hazard was there: both clients' statements ran on one server session.
    assert {pid for _, pid in seen_a} == {pid for _, pid in seen_b}


def test_two_clients_at_once_each_keep_their_own_bound(
    two_clients: tuple[ServerlessPool, ServerlessPool],
) -> None:
    bounded, plain = two_clients
    errors: list[BaseException] = []
    seen: dict[str, list[str]] = {"bounded": [], "plain": []}

    def work(pool: ServerlessPool, name: str) -> None:
        try:
            for i in range(ROUNDS):
                with pool.connection() as conn:
                    if name == "bounded":
                        with deadline_after(5), bound_statements_by_deadline():
                            rows = [conn.execute(BOUND + " || %s", [""]).fetchone()]
                            if i % 2:
                                rows.append(conn.execute(BOUND).fetchone())
                    else:
                        rows = [conn.execute(BOUND).fetchone(), conn.execute(BOUND).fetchone()]
                seen[name].extend(row[0] for row in rows if row is not None)
        except BaseException as err:
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=(bounded, "bounded")),
        threading.Thread(target=work, args=(plain, "plain")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(seen["plain"]) == 2 * ROUNDS
    assert set(seen["plain"]) == {"0"}
    assert len(seen["bounded"]) == ROUNDS + ROUNDS // 2
    assert all(value.endswith("ms") and value != "0" for value in seen["bounded"])


def test_a_statement_the_server_ends_at_one_clients_deadline_frees_the_session_for_the_other(
    two_clients: tuple[ServerlessPool, ServerlessPool],
) -> None:
    bounded, plain = two_clients
    outcome: dict[str, object] = {}

    def sleeper() -> None:
        started = time.monotonic()
        with bounded.connection() as conn, deadline_after(1.0), bound_statements_by_deadline():
            try:
                conn.execute("SELECT pg_sleep(%s)", [60])
            except psycopg.errors.QueryCanceled as err:
                outcome["sqlstate"] = err.sqlstate
        outcome["took"] = time.monotonic() - started

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.3)  # the sleeper holds the one server connection
    started = time.monotonic()
    with plain.connection() as conn:
        # Queued behind the sleeper, then run unbounded: a statement longer than the
        # sleeper's bound is not cut short.
        row = conn.execute("SELECT pg_sleep(1.2), current_setting('statement_timeout')").fetchone()
    waited = time.monotonic() - started
    thread.join(30)
    assert outcome["sqlstate"] == "57014"
    assert 0.9 < outcome["took"] < 5.0  # type: ignore[operator]
    assert row == ("", "0")
    assert 1.2 < waited < 8.0
