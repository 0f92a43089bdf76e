"""One simulated Lambda instance: an OS process serving its requests one at a time.

Between two bursts of traffic the instance sleeps without touching its socket, which is
what a frozen Lambda instance looks like from the server: an open connection that says
nothing. Every instance gets the same arrival times for every strategy (they come from
the seed), so the strategies are compared on identical traffic.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from .params import FleetParams
from .strategies import error_kind, make_strategy

__all__ = ["InstanceResult", "arrivals", "instance_main"]


@dataclass
class InstanceResult:
    """What one instance saw: per request, its latency and its error kind (or None)."""

    index: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    connects: int = 0
    crash: str | None = None


def arrivals(params: FleetParams, index: int) -> list[float]:
    """Seconds after the start at which each wave reaches instance `index`."""
    rng = random.Random(params.seed * 1_000_003 + index)
    return [w * params.wave_interval + rng.uniform(0, params.spread) for w in range(params.waves)]


def instance_main(
    index: int,
    strategy: str,
    conninfo: str,
    params: FleetParams,
    sync: tuple[Any, Any, Any, Any],
    results: Any,
) -> None:
    """Process entry point (spawned): wait for the common start, serve, report.

    `sync` is (a shared double that will hold the start on the `time.monotonic()` clock,
    which is CLOCK_MONOTONIC and so the same in every process; a semaphore this instance
    releases once ready; an event the parent sets to start; an event the parent sets
    when the whole fleet is done). `results` is a queue that receives one
    `InstanceResult`.
    """
    start, ready, go, finish = sync
    result = InstanceResult(index)
    try:
        handler = make_strategy(strategy, conninfo, params)
        ready.release()
        go.wait(timeout=180)
        t0 = float(start.value)
        stop_at = t0 + params.run_cap
        try:
            for arrival in arrivals(params, index):
                _sleep_until(t0 + arrival)
                for request in range(params.burst):
                    if request:
                        time.sleep(params.think)
                    if time.monotonic() >= stop_at:
                        result.latencies.append(0.0)
                        result.errors.append("not run (wall-clock cap)")
                        continue
                    began = time.monotonic()
                    try:
                        handler.handle()
                    except Exception as err:  # noqa: BLE001 (every failure is a result here)
                        result.errors.append(error_kind(err))
                    else:
                        result.errors.append(None)
                    result.latencies.append(time.monotonic() - began)
            result.connects = handler.connects()
            results.put(result)
            # A Lambda instance outlives its last request, frozen with whatever it holds;
            # exiting now would hand its slot to the instances still serving.
            finish.wait(timeout=params.run_cap + 10.0)
        finally:
            handler.close()
    except Exception as err:  # noqa: BLE001 (reported to the parent, not lost)
        result.crash = f"{type(err).__name__}: {err}"
        results.put(result)


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)
