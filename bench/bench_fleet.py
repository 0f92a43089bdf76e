"""The fleet: 3x more Lambda-like instances than database slots, three strategies.

    python bench/bench_fleet.py [--quick]

Each strategy (connect per request, a module-level connection held for the life of
the instance, ServerlessPool) serves the same seeded traffic with the same fleet of OS
processes against the same throwaway PostgreSQL, one after the other in one run.
Printed: requests, errors by kind, the peak of the fleet's server sessions (sampled
from ``pg_stat_activity`` every 5 ms), connections opened, p50 and p99 latency of the
successful requests. The parameters are documented in ``serverless_pool/fleet/params.py``
and printed with the table.

`run(quick)` returns the rows for ``bench/run_all.py``.
"""

from __future__ import annotations

import argparse
from typing import Any

from serverless_pool.fleet import FleetParams, format_table, simulate
from serverless_pool.fleet.report import StrategyResult


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run the fleet once per strategy; one row each, ServerlessPool last."""
    report = simulate(FleetParams.quick() if quick else FleetParams())
    return [r.as_row() for r in report.results]


def _describe(params: FleetParams) -> str:
    return (
        f"{params.instances} instances, {params.budget} usable slots;"
        f" {params.waves} waves every {params.wave_interval:g} s arriving over"
        f" {params.spread:g} s; bursts of {params.burst} requests with"
        f" {params.think * 1000:g} ms think time; {params.service * 1000:g} ms of database"
        f" work per request; ServerlessPool idle_session_timeout"
        f" {params.idle_session_timeout:g} s, request deadline {params.request_timeout:g} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller fleet (smoke run)")
    args = parser.parse_args()
    params = FleetParams.quick() if args.quick else FleetParams()
    rows = run(quick=args.quick)
    print(_describe(params))
    print(format_table([StrategyResult(**_fields(row)) for row in rows]))


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in StrategyResult.__dataclass_fields__}


if __name__ == "__main__":
    main()
