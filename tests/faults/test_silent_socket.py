"""A socket that goes silent: the server process is stopped with SIGSTOP.

Nothing closes the connection, so the socket poll sees nothing wrong. After a long
idle gap the pool pings; the ping must give up within ``ping_timeout`` and the pool
must open a new connection rather than hang on the frozen one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer


def test_the_ping_after_an_idle_gap_times_out_and_the_pool_reconnects(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    pool = make_pool(max_size=1, ping_after_idle=0.2, ping_timeout=0.5)
    with pool.connection() as conn:
        frozen_pid = conn.info.backend_pid
    postgres.freeze_backend(frozen_pid)
    try:
        time.sleep(0.3)  # longer than ping_after_idle: the next borrow pings
        started = time.monotonic()
        with pool.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        elapsed = time.monotonic() - started
        stats = pool.stats()
    finally:
        postgres.thaw_backend(frozen_pid)
    assert row is not None
    assert row[0] != frozen_pid
    assert stats["replaced_ping_failed"] == 1
    assert stats["connections_opened"] == 2
    assert elapsed < 10  # proof of no hang, not a speed claim


def test_a_borrow_within_the_idle_gap_does_not_ping(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    """The control: the ping is reserved for long gaps (a thaw), not every borrow."""
    pool = make_pool(max_size=1, ping_after_idle=60)
    for _ in range(10):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    assert pool.stats().get("pings", 0) == 0
