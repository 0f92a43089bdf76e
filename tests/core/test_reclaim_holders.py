"""`reclaim()` and borrowers that hold their connection in state of their own.

A borrow through `acquire_held` names a holder; at the end of a unit of work `reclaim()`
asks that holder to let go instead of taking the connection from under it, and the
holder goes with the loan: a connection returned and lent again never calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serverless_pool import PooledConnection, ServerlessPool

MakePool = Callable[..., ServerlessPool]


def test_reclaim_asks_the_holder_of_a_held_loan_to_let_go(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    held: dict[str, Any] = {}
    asked: list[PooledConnection[Any]] = []

    def let_go(conn: PooledConnection[Any]) -> None:
        asked.append(conn)
        if held.pop("conn", None) is conn:
            pool.release(conn)

    held["conn"] = conn = pool.acquire_held(let_go)
    conn.execute("BEGIN")
    assert pool.reclaim() == 1
    assert asked == [conn]
    assert held == {}  # the holder let go before the pool lent it again
    assert pool.stats()["pool_in_use"] == 0
    with pool.connection() as again:
        assert again is conn
        assert again.info.transaction_status.name == "IDLE"  # rolled back on return


def test_a_holder_is_forgotten_when_its_loan_ends(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    asked: list[PooledConnection[Any]] = []
    conn = pool.acquire_held(asked.append)
    pool.release(conn)
    leaked = pool.acquire()  # the same connection, lent to a plain borrower
    assert leaked is conn
    assert pool.reclaim() == 1  # taken back by the pool itself
    assert asked == []
    assert pool.stats()["pool_in_use"] == 0
