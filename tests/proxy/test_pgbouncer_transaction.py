"""proxy_mode="pgbouncer-transaction" against a real PgBouncer in transaction mode.

In transaction mode each transaction may run on a different server connection, so
anything a client leaves in "its" session (a prepared statement, a SET) is either
missing next time or seen by someone else. The pool must leave nothing there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool.errors import ConnectionFailed
from serverless_pool.testing.pgbouncer import PgBouncerServer

POOLS = 4
ROUNDS = 150
TIME_LIMIT = 60.0


def test_the_same_query_hundreds_of_times_from_several_pools_never_misses_a_prepared_statement(
    pgbouncer: PgBouncerServer,
    make_proxy_pool: Callable[..., ServerlessPool],
    statements: Callable[[str], list[str]],
    app_name: str,
) -> None:
    pools = [
        make_proxy_pool(pgbouncer.conninfo(), proxy_mode="pgbouncer-transaction", max_size=1)
        for _ in range(POOLS)
    ]
    errors: list[BaseException] = []
    seen_pids: list[set[int]] = [set() for _ in pools]
    wrong: list[tuple[int, int]] = []
    stop_at = time.monotonic() + TIME_LIMIT

    def work(index: int) -> None:
        pool = pools[index]
        try:
            for i in range(ROUNDS):
                if time.monotonic() > stop_at:
                    return
                with pool.connection() as conn:
                    row = conn.execute("SELECT %s::int + 1, pg_backend_pid()", (i,)).fetchone()
                assert row is not None
                if row[0] != i + 1:
                    wrong.append((i, row[0]))
                seen_pids[index].add(row[1])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(POOLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIME_LIMIT + 10)

    assert errors == []
    assert wrong == []
    assert sum(pool.stats()["borrows"] for pool in pools) == POOLS * ROUNDS
    # The hazard was really there: 4 clients shared 2 server connections, and at least
    # one client's statements ran on more than one of them.
    all_pids = set().union(*seen_pids)
    assert len(all_pids) <= pgbouncer.default_pool_size
    assert any(len(pids) > 1 for pids in seen_pids)
    assert sum(pool.stats()["connections_opened"] for pool in pools) == POOLS
    # No named (prepared) statement ever reached the server.
    logged = statements(app_name)
    assert len(logged) >= POOLS * ROUNDS
    assert not [line for line in logged if line.startswith("execute _pg")]


def test_direct_mode_settings_behind_pgbouncer_do_lose_prepared_statements(
    pgbouncer: PgBouncerServer, make_proxy_pool: Callable[..., ServerlessPool]
) -> None:
    """The control: what the proxy mode prevents happens without it."""
    pool = make_proxy_pool(pgbouncer.conninfo(), proxy_mode="direct", prepare_threshold=0)
    with pool.connection() as conn:
        # Prepared on the server connection PgBouncer lent for this transaction.
        conn.execute("SELECT %s::int", (1,))
        # Another client now holds that server connection inside a transaction, so
        # our next transaction runs on the other one, where the statement never was.
        with psycopg.connect(pgbouncer.conninfo(), prepare_threshold=None) as other:
            other.execute("SELECT 1")
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                conn.execute("SELECT %s::int", (2,))


def test_set_local_by_one_borrower_is_never_seen_by_the_next(
    pgbouncer: PgBouncerServer, make_proxy_pool: Callable[..., ServerlessPool]
) -> None:
    first = make_proxy_pool(pgbouncer.conninfo(), proxy_mode="pgbouncer-transaction")
    second = make_proxy_pool(pgbouncer.conninfo(), proxy_mode="pgbouncer-transaction")
    with first.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '1234ms'")
        conn.execute("SELECT set_config('app.tenant', 'tenant-a', true)")
        inside = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('app.tenant')"
        ).fetchone()
    assert inside == ("1234ms", "tenant-a")
    for pool in (first, second, first):
        with pool.connection() as conn:
            after = conn.execute(
                "SELECT current_setting('statement_timeout'), current_setting('app.tenant', true)"
            ).fetchone()
        assert after is not None
        assert after[0] == "0"
        assert after[1] in (None, "")


def test_the_pool_itself_sends_no_session_statements_behind_pgbouncer(
    pgbouncer: PgBouncerServer,
    make_proxy_pool: Callable[..., ServerlessPool],
    statements: Callable[[str], list[str]],
    app_name: str,
) -> None:
    pool = make_proxy_pool(
        pgbouncer.conninfo(),
        proxy_mode="pgbouncer-transaction",
        statement_timeout=5,
        idle_in_transaction_session_timeout=10,
        idle_session_timeout=60,
        ping_after_idle=0,  # a ping on every borrow: it must not be a session statement
    )
    assert pool.settings.prepare_threshold is None
    for _ in range(10):
        with pool.connection() as conn:
            # In direct mode this would mark the session dirty and cost a DISCARD ALL.
            conn.execute("SELECT set_config('app.tenant', 'x', true)")
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('idle_session_timeout')"
        ).fetchone()
    # The server-side timeouts are not sent (they belong to the role behind a proxy).
    assert row == ("0", "0")
    assert pool.stats().get("resets", 0) == 0
    logged = statements(app_name)
    pings = [line for line in logged if line == "statement: "]
    # every borrow but the first (a new connection) pinged
    assert len(pings) == pool.stats()["pings"] == 10
    ours = [line for line in logged if line != "statement: "]
    assert len(ours) == 11
    assert all("set_config" in line or "current_setting" in line for line in ours)


def test_server_side_timeouts_reach_pgbouncer_only_in_direct_mode_and_it_refuses_them(
    pgbouncer: PgBouncerServer, make_proxy_pool: Callable[..., ServerlessPool]
) -> None:
    """Why the proxy modes send no startup ``options``: PgBouncer refuses the login."""
    direct = make_proxy_pool(pgbouncer.conninfo(), proxy_mode="direct", statement_timeout=5)
    refused = pytest.raises(ConnectionFailed, match="unsupported startup parameter: options")
    with refused, direct.connection():
        pass
    proxied = make_proxy_pool(
        pgbouncer.conninfo(), proxy_mode="pgbouncer-transaction", statement_timeout=5
    )
    with proxied.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
