"""The pool's public surface: lazy opening, borrowing, returning, closing, stats."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from serverless_pool import PoolClosed, PoolError, PoolTimeout, ServerlessPool
from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer


def test_no_connection_is_opened_before_the_first_borrow(
    postgres: PostgresServer, pool: ServerlessPool, app_name: str
) -> None:
    assert postgres.backends(application_name=app_name) == []
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert len(postgres.backends(application_name=app_name)) == 1


def test_connection_is_a_psycopg_connection_in_autocommit(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        assert isinstance(conn, psycopg.Connection)
        assert conn.autocommit is True
        conn.execute("CREATE TEMP TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        # autocommit: visible without a commit, nothing open on the server
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_the_same_server_session_is_reused(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        first = conn.info.backend_pid
    with pool.connection() as conn:
        assert conn.info.backend_pid == first
    stats = pool.stats()
    assert stats["connections_opened"] == 1
    assert stats["borrows"] == 2
    assert stats["reused"] == 1


def test_acquire_and_release_explicitly(pool: ServerlessPool) -> None:
    conn = pool.acquire()
    try:
        assert conn.execute("SELECT 2").fetchone() == (2,)
        assert pool.stats()["pool_in_use"] == 1
    finally:
        pool.release(conn)
    assert pool.stats()["pool_in_use"] == 0
    assert pool.stats()["pool_available"] == 1


def test_returning_a_connection_twice_is_an_error(pool: ServerlessPool) -> None:
    conn = pool.acquire()
    pool.release(conn)
    with pytest.raises(PoolError, match="not on loan"):
        pool.release(conn)


def test_a_connection_from_elsewhere_is_refused(
    pool: ServerlessPool, postgres: PostgresServer
) -> None:
    with psycopg.connect(postgres.conninfo()) as foreign, pytest.raises(PoolError):
        pool.release(foreign)


def test_a_connection_lent_by_another_pool_is_refused_and_stays_on_loan(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    lender, other = make_pool(), make_pool()
    conn = lender.acquire()
    with pytest.raises(PoolError, match="not on loan"):
        other.release(conn)
    assert lender.stats()["pool_in_use"] == 1
    assert other.stats()["pool_in_use"] == 0
    lender.release(conn)  # still the lender's to take back
    assert lender.stats()["pool_available"] == 1


def test_closed_pool_refuses_borrows_and_closes_loans_on_return(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool], app_name: str
) -> None:
    pool = make_pool(max_size=2)
    held = pool.acquire()
    with pool.connection():
        pass
    pool.close()
    assert pool.closed
    with pytest.raises(PoolClosed, match=f"the pool {pool.name!r} is closed"):
        pool.acquire()
    pool.release(held)
    assert held.closed
    assert postgres.wait_for_backends(0, application_name=app_name) == []


def test_pool_is_a_context_manager(postgres: PostgresServer, app_name: str) -> None:
    with (
        ServerlessPool(postgres.conninfo(), application_name=app_name) as pool,
        pool.connection() as conn,
    ):
        conn.execute("SELECT 1")
    assert pool.closed
    assert postgres.wait_for_backends(0, application_name=app_name) == []


def test_repr_and_stats_never_show_the_password(postgres: PostgresServer) -> None:
    pool = ServerlessPool(postgres.url(), application_name="repr-test")
    try:
        with pool.connection():
            pass
        text = repr(pool) + str(pool.stats())
        assert APP_PASSWORD not in text
        assert f"port={postgres.port}" in repr(pool)
        assert "dbname=app" in repr(pool)
    finally:
        pool.close()


def test_max_size_bounds_connections_and_waiters_time_out(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=2, acquire_timeout=0.2)
    a, b = pool.acquire(), pool.acquire()
    try:
        with pytest.raises(PoolTimeout, match="no free connection"):
            pool.acquire()
        assert pool.stats()["timeouts"] == 1
    finally:
        pool.release(a)
        pool.release(b)


def test_a_waiter_gets_the_connection_another_thread_returns(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=1, acquire_timeout=10)
    held = pool.acquire()
    got: list[int] = []

    def borrow() -> None:
        with pool.connection() as conn:
            got.append(conn.info.backend_pid)

    waiter = threading.Thread(target=borrow)
    waiter.start()
    threading.Event().wait(0.1)
    pid = held.info.backend_pid
    pool.release(held)
    waiter.join(10)
    assert got == [pid]
    stats = pool.stats()
    assert stats["waits"] == 1
    assert stats["connections_opened"] == 1


def test_threads_never_share_a_connection(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool], app_name: str
) -> None:
    pool = make_pool(max_size=3, acquire_timeout=30)
    in_use: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    peak = [0]

    def work() -> None:
        try:
            for _ in range(40):
                with pool.connection() as conn:
                    pid = conn.info.backend_pid
                    with lock:
                        assert pid not in in_use, "a connection was lent twice at once"
                        in_use.add(pid)
                        peak[0] = max(peak[0], len(in_use))
                    conn.execute("SELECT pg_sleep(0.001)")
                    with lock:
                        in_use.discard(pid)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert 1 <= peak[0] <= 3
    assert len(postgres.backends(application_name=app_name)) <= 3
    assert pool.stats()["borrows"] == 8 * 40


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, to shake out races."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_threads_never_share_a_connection_when_switching_all_the_time(
    make_pool: Callable[..., ServerlessPool], switch_often: None
) -> None:
    """Borrow and return take no lock in the common case: ownership is list.pop()."""
    pool = make_pool(max_size=2, acquire_timeout=30)
    holders: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(me: int) -> None:
        try:
            for _ in range(150):
                with pool.connection() as conn:
                    key = id(conn)
                    with lock:
                        assert key not in holders, "a connection was lent twice at once"
                        holders[key] = me
                    with lock:
                        del holders[key]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    stats = pool.stats()
    assert stats["borrows"] == 6 * 150
    assert stats["pool_size"] <= 2
    assert stats["pool_available"] == stats["pool_size"]  # each idle connection once
    assert stats["connections_opened"] - stats.get("connections_closed", 0) == stats["pool_size"]


def test_of_two_threads_returning_one_loan_at_once_exactly_one_fails(
    make_pool: Callable[..., ServerlessPool], switch_often: None
) -> None:
    pool = make_pool(max_size=1)
    lent: list[Any] = []
    outcomes: list[str] = []
    trials = 300

    deadline = time.monotonic() + 60  # every spin below stops by itself

    def give_back() -> None:
        for trial in range(trials):
            while len(lent) <= trial and time.monotonic() < deadline:
                pass  # both threads spin, so both are running when the loan appears
            if len(lent) <= trial:
                return
            try:
                pool.release(lent[trial])
                outcomes.append("returned")
            except PoolError:
                outcomes.append("refused")

    threads = [threading.Thread(target=give_back) for _ in range(2)]
    for t in threads:
        t.start()
    for trial in range(trials):
        while len(outcomes) < 2 * trial and time.monotonic() < deadline:
            pass
        assert len(outcomes) == 2 * trial
        assert pool.stats()["pool_available"] == 1 or trial == 0  # on the stack once
        lent.append(pool.acquire())
    for t in threads:
        t.join(30)
    assert outcomes.count("returned") == trials
    assert outcomes.count("refused") == trials


def test_warm_opens_connections_ahead_of_use(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool], app_name: str
) -> None:
    pool = make_pool(max_size=3, min_size=2)
    assert pool.warm() == 2
    assert len(postgres.backends(application_name=app_name)) == 2
    with pool.connection():
        pass
    assert pool.stats()["connections_opened"] == 2


def test_drain_closes_idle_connections_and_the_pool_goes_on(
    postgres: PostgresServer, pool: ServerlessPool, app_name: str
) -> None:
    with pool.connection():
        pass
    assert pool.drain() == 1
    assert postgres.wait_for_backends(0, application_name=app_name) == []
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pop_stats_resets_counters(pool: ServerlessPool) -> None:
    with pool.connection():
        pass
    assert pool.pop_stats()["borrows"] == 1
    after = pool.stats()
    assert "borrows" not in after
    assert after["pool_size"] == 1


def test_conninfo_may_be_a_callable(postgres: PostgresServer, app_name: str) -> None:
    calls: list[int] = []

    def conninfo() -> str:
        calls.append(1)
        return postgres.conninfo()

    with ServerlessPool(conninfo, application_name=app_name, max_size=2) as pool:
        a, b = pool.acquire(), pool.acquire()
        pool.release(a)
        pool.release(b)
    assert len(calls) == 2


def test_configure_runs_on_each_new_connection(postgres: PostgresServer, app_name: str) -> None:
    seen: list[int] = []
    with ServerlessPool(
        postgres.conninfo(),
        application_name=app_name,
        configure=lambda conn: seen.append(conn.info.backend_pid),
    ) as pool:
        with pool.connection() as conn:
            assert seen == [conn.info.backend_pid]
        with pool.connection():
            pass
    assert len(seen) == 1


def test_the_stats_add_up_whatever_happened(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool], app_name: str
) -> None:
    """opened - closed is the pool's size, borrows - returns what is on loan."""
    pool = make_pool(max_size=3)

    def check() -> None:
        stats = pool.stats()
        opened = stats["connections_opened"] - stats.get("connections_closed", 0)
        assert opened == stats["pool_size"], stats
        assert stats["borrows"] - stats.get("returns", 0) == stats["pool_in_use"], stats

    a, b = pool.acquire(), pool.acquire()
    check()
    pool.release(a)
    check()
    with pool.connection() as conn:
        # the session ends under the borrow: replaced before the first statement
        postgres.terminate_backends(pids=[conn.info.backend_pid])
        postgres.wait_process_gone(conn.info.backend_pid)
        conn.execute("SELECT 1")
        check()
    check()
    b.close()  # closed by its borrower: discarded on return
    pool.release(b)
    check()
    postgres.terminate_backends(application_name=app_name)  # ended while idle
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    check()
    pool.drain()
    check()
    assert pool.stats()["pool_size"] == 0
