"""The fleet simulation: 3x more instances than slots, three strategies, one traffic.

One quick fleet runs for the whole module (through the command line, as users run it)
and every test reads its results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from serverless_pool.fleet.instance import InstanceResult, arrivals
from serverless_pool.fleet.params import FleetParams
from serverless_pool.fleet.report import percentile, summarize
from serverless_pool.testing.postgres import APP_PASSWORD, SUPERUSER_PASSWORD, PostgresServer


def _fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serverless_pool.cli", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run() -> tuple[int, dict[str, Any], str]:
    proc = _fleet("--quick", "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stdout + proc.stderr


def _row(report: dict[str, Any], strategy: str) -> dict[str, Any]:
    (row,) = [r for r in report["results"] if r["strategy"] == strategy]
    return row


def test_the_fleet_has_three_times_more_instances_than_slots(
    quick_run: tuple[int, dict[str, Any], str],
) -> None:
    _, report, _ = quick_run
    params = report["params"]
    assert params["instances"] == 3 * params["budget"]
    assert [r["strategy"] for r in report["results"]] == [
        "connect-per-request",
        "module-level",
        "serverless-pool",
    ]
    for row in report["results"]:
        assert row["requests"] == params["instances"] * params["waves"] * params["burst"]
        assert row["crashes"] == []


def test_serverless_pool_serves_every_request_within_the_budget(
    quick_run: tuple[int, dict[str, Any], str],
) -> None:
    code, report, output = quick_run
    row = _row(report, "serverless-pool")
    assert row["errors"] == 0, row["error_kinds"]
    assert 0 < row["peak_connections"] <= row["budget"]
    # Instances reuse their connection within a burst instead of reconnecting.
    assert row["connects"] < row["requests"]
    assert code == 0, output


def test_connect_per_request_fails_when_the_burst_exceeds_the_slots(
    quick_run: tuple[int, dict[str, Any], str],
) -> None:
    _, report, _ = quick_run
    row = _row(report, "connect-per-request")
    assert row["errors"] > 0
    assert row["error_kinds"].get("too many clients", 0) > 0
    assert row["connects"] == row["requests"]
    assert row["peak_connections"] <= row["budget"]


def test_a_module_level_connection_starves_the_instances_without_one(
    quick_run: tuple[int, dict[str, Any], str],
) -> None:
    _, report, _ = quick_run
    row = _row(report, "module-level")
    params = report["params"]
    assert row["error_kinds"].get("too many clients", 0) > 0
    # The instances that got a slot keep it while frozen: the others never get one.
    starved = params["instances"] - row["budget"]
    assert row["errors"] >= starved * params["waves"] * params["burst"] // 2


def test_no_password_appears_in_the_output(quick_run: tuple[int, dict[str, Any], str]) -> None:
    _, _, output = quick_run
    assert APP_PASSWORD not in output
    assert SUPERUSER_PASSWORD not in output


def test_the_text_report_is_a_table_of_the_strategies() -> None:
    proc = _fleet("--quick", "--budget", "2", "--waves", "1", "--strategy", "serverless-pool")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("fleet: 6 instances x 2 requests (1 waves every")
    assert lines[2].startswith("| strategy | instances | budget | requests | errors |")
    cells = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert cells[:6] == ["serverless-pool", "6", "2", "12", "0", "-"]
    assert 1 <= int(cells[6]) <= 2


def test_fleet_parameters_out_of_range_are_bad_input() -> None:
    proc = _fleet("--quick", "--instances", "500")
    assert proc.returncode == 2
    assert "fleet parameter instances must be between 1 and 200, got 500" in proc.stderr


def test_arrivals_are_the_same_for_every_strategy_and_inside_each_wave() -> None:
    params = FleetParams.quick()
    first = [arrivals(params, i) for i in range(params.instances)]
    assert first == [arrivals(params, i) for i in range(params.instances)]
    for times in first:
        for wave, at in enumerate(times):
            start = wave * params.wave_interval
            assert start <= at <= start + params.spread
    assert len({times[0] for times in first}) == params.instances


def test_a_lost_instance_counts_its_requests_as_failed() -> None:
    ok = InstanceResult(0, latencies=[0.01, 0.03], errors=[None, None], connects=1)
    failed = InstanceResult(1, latencies=[0.002], errors=["too many clients"], connects=1)
    row = summarize(
        "x", [ok, failed], instances=3, budget=1, expected_requests=6, peak=1, seconds=1.0
    )
    assert row.errors == 4
    assert row.error_kinds == {"not run (instance lost)": 3, "too many clients": 1}
    assert row.p50_ms == 10.0
    assert row.connects == 2


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None


def test_a_given_server_is_used_with_its_free_slots_as_the_budget(
    postgres: PostgresServer,
) -> None:
    proc = _fleet(
        "--quick", "--url", postgres.url(), "--instances", "4", "--waves", "1",
        "--strategy", "serverless-pool", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["server"] == "given by --url"
    (row,) = report["results"]
    assert row["instances"] == 4
    assert row["errors"] == 0
    assert 1 <= row["peak_connections"] <= 4
    assert 4 < row["budget"] <= report["usable_slots"]
    assert APP_PASSWORD not in proc.stdout + proc.stderr
