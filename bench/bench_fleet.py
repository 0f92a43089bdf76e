"""The fleet on the Lambda emulator: three shapes of fleet, five strategies, one run.

    python bench/bench_fleet.py [--quick] [--json FILE] [--plot FILE.png]

What ``serverless-pool fleet`` runs (see docs/fleet.md): instances of the real
``awslambdaric`` on the local emulator, frozen between invocations and shut down as
Lambda does, against a throwaway PostgreSQL whose ``idle_session_timeout`` is short;
on-demand instances 3 and 6 per usable slot, and Lambda Managed Instances; connect per
request, a module-level connection, ServerlessPool with and without its shutdown
extension, and ServerlessPool behind PgBouncer in transaction mode. Every strategy of a
shape serves the same seeded traffic, one after the other, in one run.

Printed: the tables of the README, the machine's load before and after, and the CPU
time the run took. ``--json`` saves the whole report (what the plot is drawn from),
``--plot`` draws it. `run(quick)` returns one row per strategy and shape for
``bench/run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serverless_pool.fleet import FleetParams, format_tables, simulate
from serverless_pool.fleet.progress import ProgressBar


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Every run of the fleet, each with its shape (``format_table`` regroups them)."""
    return _rows(_report(quick))


def _report(quick: bool) -> dict[str, Any]:
    bar = ProgressBar(sys.stderr)
    try:
        report = simulate(FleetParams.quick() if quick else FleetParams(), progress=bar)
    finally:
        bar.close()
    return report.as_dict()


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for shape in report["shapes"]:
        about = {k: v for k, v in shape.items() if k != "runs"}
        rows += [{**run, "shape": about} for run in shape["runs"]]
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The README's tables, one per shape, from `run()`'s rows."""
    shapes: dict[str, dict[str, Any]] = {}
    for row in rows:
        about = row["shape"]
        shapes.setdefault(about["name"], {**about, "runs": []})["runs"].append(row)
    budget = rows[0]["budget"] if rows else 0
    return format_tables(list(shapes.values()), budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small fleet (smoke run)")
    parser.add_argument("--json", type=Path, help="save the report as JSON to this file")
    parser.add_argument("--plot", type=Path, help="draw the report to this PNG")
    args = parser.parse_args()
    report = _report(args.quick)
    print(f"server: {report['server']}; budget {report['budget']} slots")
    print(format_tables(report["shapes"], report["budget"]))
    machine = report["machine"]
    print(
        f"machine: {machine['cpus']} CPUs, load average {machine['load_before']} before and"
        f" {machine['load_after']} after; CPU seconds: {machine['cpu_seconds']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        from serverless_pool.fleet.plot import render

        render(report, args.plot)


if __name__ == "__main__":
    main()
