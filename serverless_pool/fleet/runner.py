"""Run the fleet: spawn the instances, watch the server, collect what they saw.

The parent process owns the server (a throwaway one on 127.0.0.1 unless a URL is
given) and samples ``pg_stat_activity`` every few milliseconds through a session of
its own. That session takes an ordinary slot (PostgreSQL gives out its superuser
reserve only once the ordinary slots are gone), so the throwaway server has one more
than the fleet's budget.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from ..budget import Budget, read_budget
from .instance import InstanceResult, instance_main
from .params import FleetParams
from .report import StrategyResult, summarize
from .strategies import STRATEGIES

__all__ = ["FleetReport", "run_strategy", "simulate"]

_COUNT = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND application_name = %s"
)


@dataclass(frozen=True)
class FleetReport:
    """The strategies' results on one server, measured one after the other."""

    params: FleetParams
    budget: Budget
    results: list[StrategyResult]
    server: str

    def as_dict(self) -> dict[str, object]:
        return {
            "params": self.params.as_dict(),
            "server": self.server,
            "usable_slots": self.budget.usable,
            "results": [r.as_row() for r in self.results],
        }


def simulate(
    params: FleetParams | None = None,
    *,
    url: str | None = None,
    strategies: Sequence[str] = STRATEGIES,
    progress: Callable[[str], None] | None = None,
    scale_to_budget: bool = True,
) -> FleetReport:
    """Run every strategy in `strategies` against the same server and the same traffic.

    Without `url`, a throwaway PostgreSQL server is started with ``max_connections`` set
    so that exactly ``params.budget`` slots are usable by the fleet, and removed
    afterwards. With a `url`, the budget is the slots free on that server (less the one
    the monitor takes) and, with `scale_to_budget`, the fleet has 3 times as many
    instances.
    """
    params = (params or FleetParams()).validate()
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(
            f"unknown strategy {unknown[0]!r}; expected one of {', '.join(STRATEGIES)}"
        )
    say = progress or (lambda _message: None)
    with _server(params, url, say) as (conninfo, monitor, server):
        with psycopg.connect(monitor, autocommit=True) as conn:
            budget = read_budget(conn)
        if url is None and budget.usable != params.budget + 1:
            raise RuntimeError(
                f"the server has {budget.usable} usable slots, not {params.budget + 1}"
            )
        if url is not None:
            # The monitor's own session is counted in use already.
            free = budget.free
            if free < 1:
                raise ValueError("the server given by --url has no free connection slot")
            instances = 3 * free if scale_to_budget else params.instances
            params = params.replace(budget=free, instances=instances)
        results = []
        for strategy in strategies:
            say(f"running {strategy}: {params.instances} instances, budget {params.budget}")
            results.append(run_strategy(strategy, conninfo, monitor, params))
    return FleetReport(params, budget, results, server)


@contextlib.contextmanager
def _server(
    params: FleetParams, url: str | None, say: Callable[[str], None]
) -> Iterator[tuple[str, str, str]]:
    if url is not None:
        yield url, url, "given by --url"
        return
    from ..testing.postgres import PostgresServer

    say(f"starting a throwaway PostgreSQL with {params.budget} usable slots")
    # PostgreSQL hands the superuser reserve out only when the last slots are taken, so
    # the monitor's session takes an ordinary slot: one more keeps the fleet's at budget.
    reserved, monitor_slot = 3, 1
    with PostgresServer(max_connections=params.budget + reserved + monitor_slot) as server:
        version = server.execute("SHOW server_version")[0][0]
        yield server.conninfo(), server.superuser_conninfo, f"PostgreSQL {version}, loopback"


def run_strategy(strategy: str, conninfo: str, monitor: str, params: FleetParams) -> StrategyResult:
    """Spawn the fleet for one strategy, run it to the end (or its cap), summarize it."""
    app_name = f"sp-fleet-{strategy}"
    target = make_conninfo(conninfo, application_name=app_name, connect_timeout=5)
    # A fork server imports the instance code once and forks each instance from that
    # clean, single-threaded process: a cold start without paying Python's import time
    # per instance, and without forking this (threaded) parent.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["serverless_pool.fleet.instance"])
    start = ctx.Value("d", 0.0)
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    finish = ctx.Event()
    results: Any = ctx.Queue()
    procs = [
        ctx.Process(
            target=instance_main,
            args=(i, strategy, target, params, (start, ready, go, finish), results),
            name=f"fleet-{strategy}-{i}",
            daemon=True,
        )
        for i in range(params.instances)
    ]
    collected: list[InstanceResult] = []
    peak = 0
    began = time.monotonic()
    started: list[Any] = []
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        _wait_until_ready(ready, started)
        with _PeakSampler(monitor, app_name) as sampler:
            start.value = time.monotonic() + 0.05
            go.set()
            began = time.monotonic()
            deadline = float(start.value) + params.run_cap + 10.0
            while len(collected) < len(procs) and time.monotonic() < deadline:
                try:
                    collected.append(results.get(timeout=0.2))
                except queue.Empty:
                    if not any(p.is_alive() for p in procs) and results.empty():
                        break
            peak = sampler.peak
    finally:
        # Instances still waiting to start or to end must not wait any longer.
        go.set()
        finish.set()
        for proc in started:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        results.close()
        results.join_thread()
        _wait_for_fleet_gone(monitor, app_name)
    return summarize(
        strategy,
        collected,
        instances=params.instances,
        budget=params.budget,
        expected_requests=params.instances * params.requests_per_instance,
        peak=peak,
        seconds=time.monotonic() - began,
    )


def _wait_until_ready(ready: Any, procs: list[Any], timeout: float = 120.0) -> None:
    """Wait until every instance has done its cold start (imports, strategy set up)."""
    deadline = time.monotonic() + timeout
    for _ in procs:
        while not ready.acquire(timeout=0.2):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fleet's instances did not start within {timeout:.0f} s")
            if not all(p.is_alive() for p in procs):
                raise RuntimeError("an instance of the fleet died during its start")


class _PeakSampler:
    """Samples the fleet's session count in a thread until the block ends."""

    def __init__(self, monitor: str, app_name: str, interval: float = 0.005) -> None:
        self._conn = psycopg.connect(monitor, autocommit=True)
        self._app_name = app_name
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-sampler", daemon=True)
        self.peak = 0

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            row = self._conn.execute(_COUNT, (self._app_name,)).fetchone()
            if row is not None and row[0] > self.peak:
                self.peak = int(row[0])
            self._stop.wait(self._interval)


def _wait_for_fleet_gone(monitor: str, app_name: str, timeout: float = 10.0) -> None:
    """Leave the server empty for the next strategy (the instances are gone by now)."""
    with psycopg.connect(monitor, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute(_COUNT, (app_name,)).fetchone()
            if row is None or row[0] == 0:
                return
            time.sleep(0.05)
        with contextlib.suppress(psycopg.Error):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND application_name = %s",
                (app_name,),
            )
