"""One quick fleet for the whole test run, shared by the xdist workers.

The fleet takes about 25 s; every worker that needs it would otherwise run its own. The
first worker to ask runs it, through the command line as users do (``--json`` and
``--plot``), and leaves the result in the session's shared temporary directory; any
other waits for it (a file lock) and reads it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: The shapes the shared run covers: every strategy on on-demand instances (3 per
#: slot), and Managed Instances. The `scale` shape differs only in size.
SHARED_ARGS = ("--quick", "--shape", "burst", "--shape", "managed")


@dataclass(frozen=True)
class Cli:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class FleetRun:
    cli: Cli
    report: dict[str, Any]
    png: Path

    def run(self, shape: str, strategy: str) -> dict[str, Any]:
        (found,) = [
            run
            for s in self.report["shapes"]
            if s["name"] == shape
            for run in s["runs"]
            if run["strategy"] == strategy
        ]
        return found


def fleet_cli(*args: str, timeout: float = 300) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVERLESS_POOL_", "PG"))}
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_pool.cli", "fleet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Cli(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def run_fleet() -> Callable[..., Cli]:
    """``run_fleet(*args)``: the ``serverless-pool fleet`` command in a process of its own."""
    return fleet_cli


@pytest.fixture(scope="session")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> FleetRun:
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    saved, png = shared / "fleet-run.json", shared / "fleet-run.png"
    with open(shared / "fleet-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not saved.exists():
            cli = fleet_cli(*SHARED_ARGS, "--json", "--plot", str(png))
            saved.write_text(json.dumps({"code": cli.code, "out": cli.out, "err": cli.err}))
    data = json.loads(saved.read_text())
    cli = Cli(data["code"], data["out"], data["err"])
    assert cli.out, cli.err
    return FleetRun(cli, json.loads(cli.out), png)
