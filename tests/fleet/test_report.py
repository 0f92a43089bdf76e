"""The numbers of a run: percentiles, spreads, the timeline, and the tables."""

from __future__ import annotations

from conftest import FleetRun

from serverless_pool.fleet.report import (
    Request,
    RunResult,
    Spread,
    Timeline,
    format_tables,
    percentile,
)


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None


def test_latency_is_of_the_successful_requests_of_each_kind() -> None:
    run = RunResult("burst", "x", budget=1)
    run.requests = [
        Request(0, 0.0, 0.010, "cold", None, "i1"),
        Request(0, 0.0, 0.001, "cold", "too many clients", "i2"),
        Request(0, 0.1, 0.004, "warm", None, "i1"),
        Request(1, 2.0, 0.020, "thawed", None, "i1"),
    ]
    run.missing = 2
    assert run.latency("cold").as_dict() == {"n": 1, "p50": 10.0, "p95": 10.0, "p99": 10.0}
    assert run.latency().n == 3
    assert run.errors == 3
    assert run.error_kinds == {"not run (instance lost)": 2, "too many clients": 1}
    assert run.failed_by_kind() == {"cold": 1, "warm": 0, "thawed": 0}
    data = run.as_dict()
    assert data["requests"] == 6
    assert data["requests_by_kind"] == {"cold": 2, "warm": 1, "thawed": 1}


def test_the_timeline_keeps_the_most_seen_in_each_step() -> None:
    samples = [(-0.01, 9, 9), (0.0, 1, 0), (0.02, 3, 1), (0.04, 2, 2), (0.06, 0, 0)]
    timeline = Timeline.of(samples, step=0.05)
    assert timeline.t == [0.0, 0.05]
    assert timeline.connections == [3, 0]
    assert timeline.frozen == [2, 0]


def test_a_spread_is_its_count_median_and_maximum() -> None:
    assert Spread.of([0.3, 0.1, 0.2]).as_dict() == {"n": 3, "p50": 0.2, "max": 0.3}
    assert Spread.of([]).cell() == "-"


def test_the_tables_name_each_strategy_and_what_failed(fleet_run: FleetRun) -> None:
    report = fleet_run.report
    text = format_tables(report["shapes"], report["budget"])
    lines = text.splitlines()
    budget = report["budget"]
    header = [line for line in lines if line.startswith("| strategy |")]
    assert len(header) == len(report["shapes"])
    assert f"peak / mean (budget {budget})" in header[0]
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert "too many clients" in rows["connect per request"]
    cells = [c.strip() for c in rows["ServerlessPool, no extension"].split("|")[1:-1]]
    requests = fleet_run.run("burst", "serverless-pool-no-extension")["requests"]
    assert cells[1] == f"0 / {requests}"
    assert cells[-1].endswith("no SIGTERM, idle timeout")
