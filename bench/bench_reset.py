"""Cost of the session reset on return, direct mode: reset_on_return never/auto/always.

    python bench/bench_reset.py [--quick]

Three pools (one connection each) on one local PostgreSQL take turns in short batches,
in a shuffled order, so machine noise hits all alike. (Not borrow by borrow: the
server is still busy with the previous borrow's DISCARD ALL for a moment, which would
slow down whichever mode comes right after ``always``.) Two workloads:

- ``clean``: each borrow runs ``SELECT 1``; nothing to reset. ``auto`` should cost what
  ``never`` costs, ``always`` pays a ``DISCARD ALL`` round trip every time.
- ``dirty``: each borrow runs ``SET work_mem`` then ``SELECT 1``; ``auto`` and
  ``always`` both reset, ``never`` leaks the setting to the next borrower.

Printed: median and p99 per borrow in µs, the ratio to ``never`` on the same workload
(paired by round, see `rounds.py`), and resets per borrow. `run(quick)` returns the rows for
``bench/run_all.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from placement import pin_client_and_server
from rounds import paired_ratio

MODES = ("never", "auto", "always")
WORKLOADS: dict[str, tuple[str, ...]] = {
    "clean": ("SELECT 1",),
    "dirty": ("SET work_mem = '8MB'", "SELECT 1"),
}


def _borrow(pool: ServerlessPool, statements: tuple[str, ...]) -> Callable[[], None]:
    def once() -> None:
        with pool.connection() as conn:
            for statement in statements:
                conn.execute(statement)

    return once


BATCH = 50


def _measure(
    pools: dict[str, ServerlessPool], statements: tuple[str, ...], rounds: int
) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    """Per-borrow times and per-round medians of each mode."""
    calls = {mode: _borrow(pool, statements) for mode, pool in pools.items()}
    for call in calls.values():  # warm up: connect, fill caches
        for _ in range(50):
            call()
    for pool in pools.values():
        pool.pop_stats()
    samples: dict[str, list[int]] = {mode: [] for mode in pools}
    round_medians: dict[str, list[float]] = {mode: [] for mode in pools}
    clock = time.perf_counter_ns
    order = list(MODES)
    shuffle = random.Random(3).shuffle
    gc.disable()
    try:
        for _ in range(rounds):
            shuffle(order)
            for mode in order:
                call = calls[mode]
                timed = []
                for _ in range(BATCH):
                    started = clock()
                    call()
                    timed.append(clock() - started)
                samples[mode].extend(timed)
                round_medians[mode].append(statistics.median(timed))
    finally:
        gc.enable()
    return samples, round_medians


def run(quick: bool) -> list[dict[str, object]]:
    """Measure every mode on both workloads side by side; one row per pair."""
    rounds = 30 if quick else 120
    rows: list[dict[str, object]] = []
    with PostgresServer() as server, ExitStack() as stack:
        pin_client_and_server(server, stack)  # the same placement as the other benchmarks
        for workload, statements in WORKLOADS.items():
            pools = {
                mode: ServerlessPool(
                    server.conninfo(),
                    max_size=1,
                    reset_on_return=mode,
                    application_name=f"bench-reset-{mode}",
                    ping_after_idle=60,
                    environ={},
                )
                for mode in MODES
            }
            try:
                samples, round_medians = _measure(pools, statements, rounds)
                resets = {mode: pool.stats().get("resets", 0) for mode, pool in pools.items()}
            finally:
                for pool in pools.values():
                    pool.close()
            for mode in MODES:
                median = statistics.median(samples[mode])
                rows.append(
                    {
                        "benchmark": "reset on return (direct mode)",
                        "workload": workload,
                        "variant": f"reset_on_return={mode}",
                        "median_us": round(median / 1000, 1),
                        "p99_us": round(_percentile(samples[mode], 0.99) / 1000, 1),
                        "ratio": round(
                            paired_ratio(round_medians[mode], round_medians["never"]), 3
                        ),
                        "resets_per_borrow": round(resets[mode] / len(samples[mode]), 3),
                        "samples": len(samples[mode]),
                    }
                )
    return rows


def _percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))])


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        f"{'workload':<8} {'variant':<24} {'median µs':>10} {'p99 µs':>10}"
        f" {'× never':>8} {'resets/borrow':>14}"
    )
    for row in rows:
        print(
            f"{row['workload']!s:<8} {row['variant']!s:<24} {row['median_us']:>10}"
            f" {row['p99_us']:>10} {row['ratio']:>8} {row['resets_per_borrow']:>14}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    print_table(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
