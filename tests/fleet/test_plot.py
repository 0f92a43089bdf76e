"""``--plot``: a PNG drawn from the report's JSON and nothing else."""

from __future__ import annotations

import struct
from pathlib import Path

from conftest import FleetRun

from serverless_pool.fleet.plot import render
from serverless_pool.fleet.report import KINDS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_plot_file_is_a_png(fleet_run: FleetRun) -> None:
    width, height = _png_size(fleet_run.png)
    assert width > 0
    assert height > 0
    assert "plot: " in fleet_run.cli.err


def test_the_json_carries_everything_the_plot_shows(fleet_run: FleetRun, tmp_path: Path) -> None:
    report = fleet_run.report
    assert report["budget"] >= 1
    for shape in report["shapes"]:
        assert shape["title"]
        for run in shape["runs"]:
            timeline = run["timeline"]
            assert len(timeline["t"]) == len(timeline["connections"]) == len(timeline["frozen"])
            assert len(timeline["t"]) > 10
            assert max(timeline["connections"]) == run["server_connections"]["peak"]
            for kind in KINDS:
                assert set(run["latency_ms"][kind]) == {"n", "p50", "p95", "p99"}
            assert isinstance(run["errors"], int)
            assert run["label"]
    # Drawn again from the JSON as printed, the picture is the same, byte for byte.
    again = tmp_path / "again.png"
    render(report, again)
    assert again.read_bytes() == fleet_run.png.read_bytes()
