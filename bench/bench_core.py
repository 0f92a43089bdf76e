"""Borrow + ``SELECT 1`` + return, for each way of holding a PostgreSQL connection.

Every strategy is measured in the same run against the same throwaway server, each in
a process of its own, in interleaved rounds (each round runs a short batch of every
strategy, in a shuffled order), so machine noise hits all of them alike; see
`isolated.py` for why one process each. Printed: median and p99 in
microseconds, the ratio to the held raw connection (paired by round: the median over
rounds of each round's median over the held connection's in that round, see
`rounds.py`), and the failure rate when the server ends the backend between requests.

    python bench/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from typing import Any, NamedTuple

import psycopg
import psycopg_pool
import sqlalchemy

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from isolated import measure_in_processes
from placement import pin_client_and_server
from rounds import paired_ratio, ratio_quartiles
from tables import latency_table

Request = Callable[[], object]
HELD = "held raw psycopg connection"
OURS = "ServerlessPool (socket check on)"
HAND_ROLLED = "floor: a lock, a list and one poll() around a held connection"
CONNECT = "connect per request"


class Strategy(NamedTuple):
    """One way to serve a request: `request()` runs borrow + SELECT 1 + return.

    An `isolated.Setup` returns one, so a maker serves both the timed processes and
    the fault phase.
    """

    request: Request
    close: Callable[[], object]


def _held(conninfo: str) -> Strategy:
    conn = psycopg.connect(conninfo, autocommit=True)

    def request() -> object:
        return conn.execute("SELECT 1").fetchone()

    return Strategy(request, conn.close)


def _hand_rolled(conninfo: str) -> Strategy:
    """The least a pool with a socket check can do: the floor for ours.

    One connection behind a lock, taken from a list and put back, checked with one
    zero-timeout poll() per request and reopened when the check sees the server's
    goodbye. No lifetimes, no idle pings, no cleaning on return, no stats.
    """
    idle = [psycopg.connect(conninfo, autocommit=True)]
    lock = threading.Lock()
    watch = select.poll()
    watch.register(idle[0].pgconn.socket, select.POLLIN)

    def request() -> object:
        nonlocal watch
        with lock:
            conn = idle.pop()
            if watch.poll(0):
                conn.close()
                conn = psycopg.connect(conninfo, autocommit=True)
                watch = select.poll()
                watch.register(conn.pgconn.socket, select.POLLIN)
        try:
            return conn.execute("SELECT 1").fetchone()
        finally:
            with lock:
                idle.append(conn)

    def close() -> None:
        for conn in idle:
            conn.close()

    return Strategy(request, close)


def _connect_per_request(conninfo: str) -> Strategy:
    def request() -> object:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return conn.execute("SELECT 1").fetchone()

    return Strategy(request, lambda: None)


def _psycopg_pool(conninfo: str, check: bool) -> Strategy:
    pool = psycopg_pool.ConnectionPool(
        conninfo,
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True},
        check=psycopg_pool.ConnectionPool.check_connection if check else None,
        open=True,
    )

    def request() -> object:
        with pool.connection() as conn:
            return conn.execute("SELECT 1").fetchone()

    return Strategy(request, pool.close)


def _sqlalchemy(url: str) -> Strategy:
    engine = sqlalchemy.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"), pool_size=1, pool_pre_ping=True
    )

    def request() -> object:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT 1").fetchone()

    return Strategy(request, engine.dispose)


def _ours(conninfo: str) -> Strategy:
    pool = ServerlessPool(conninfo, max_size=1, application_name="bench")

    def request() -> object:
        with pool.connection() as conn:
            return conn.execute("SELECT 1").fetchone()

    return Strategy(request, pool.close)


def _failure_rate(
    server: PostgresServer, make: Callable[[], Strategy], requests: int
) -> tuple[int, int]:
    """Requests that failed when the server ended every backend before each request."""
    strategy = make()
    failures = 0
    try:
        with server.superuser_connection() as admin:
            strategy.request()
            for _ in range(requests):
                pids = [
                    r[0]
                    for r in admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE usename = 'app'"
                    ).fetchall()
                ]
                server.terminate_backends(pids=pids, admin=admin)
                try:
                    strategy.request()
                except Exception:
                    failures += 1
    finally:
        with suppress(Exception):
            strategy.close()
    return failures, requests


def import_overhead_ms(runs: int = 15) -> float:
    """Median extra milliseconds to import serverless_pool once psycopg is imported.

    The package is byte-compiled first, as ``pip install`` (and so a Lambda deployment
    package) does: with PYTHONDONTWRITEBYTECODE set, every import would compile the
    source again and measure the compiler instead.
    """
    import compileall

    import serverless_pool

    compileall.compile_dir(os.path.dirname(serverless_pool.__file__), quiet=1)
    code = (
        "import time, psycopg; t = time.perf_counter(); import serverless_pool;"
        " print(time.perf_counter() - t)"
    )
    times = [
        float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(runs)
    ]
    return statistics.median(times) * 1000


@contextmanager
def _server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def run(quick: bool = False, server: PostgresServer | None = None) -> list[dict[str, Any]]:
    """Measure every strategy; one row each, the held connection first."""
    context: AbstractContextManager[PostgresServer] = (
        _server() if server is None else _nullcontext(server)
    )
    # psycopg_pool warns on every dead connection it drops in the fault column
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    with context as pg, ExitStack() as stack:
        placement = pin_client_and_server(pg, stack)
        conninfo, url = pg.conninfo(), pg.url()
        makers: dict[str, Callable[[], Strategy]] = {
            HELD: lambda: _held(conninfo),
            OURS: lambda: _ours(conninfo),
            HAND_ROLLED: lambda: _hand_rolled(conninfo),
            "psycopg_pool, no check": lambda: _psycopg_pool(conninfo, check=False),
            "psycopg_pool, check=check_connection": lambda: _psycopg_pool(conninfo, check=True),
            "SQLAlchemy QueuePool + pool_pre_ping": lambda: _sqlalchemy(url),
            CONNECT: lambda: _connect_per_request(conninfo),
        }
        timings = measure_in_processes(
            makers,
            rounds=40 if quick else 200,
            batch=lambda name: 3 if name == CONNECT else 50,
        )
        held = timings[HELD].round_medians
        rows = []
        for name, make in makers.items():
            samples = sorted(timings[name].samples)
            faults = (200 if quick else 1000) if name == OURS else (50 if quick else 200)
            failed, total = _failure_rate(pg, make, faults)
            round_medians = timings[name].round_medians
            q1, q3 = ratio_quartiles(round_medians, held)
            rows.append(
                {
                    "strategy": name,
                    "median_us": statistics.median(samples),
                    "p99_us": samples[int(len(samples) * 0.99) - 1],
                    "ratio": paired_ratio(round_medians, held),
                    "ratio_q1": q1,
                    "ratio_q3": q3,
                    "samples": len(samples),
                    "failed": failed,
                    "fault_requests": total,
                    "placement": placement,
                }
            )
    return rows


class _nullcontext(AbstractContextManager[PostgresServer]):
    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def __enter__(self) -> PostgresServer:
        return self.server

    def __exit__(self, *exc: object) -> None:
        return None


def format_table(rows: list[dict[str, Any]]) -> str:
    """The README's Markdown table."""
    return latency_table(rows, "strategy", "held")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (for a smoke run)")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    print(format_table(rows))
    print(f"\nimport serverless_pool after psycopg: +{import_overhead_ms():.1f} ms (median)")


if __name__ == "__main__":
    main()
