"""The session reset costs one message per request and nothing more, counted in system
calls (see bench/syscalls.py): ``strace -c`` over Flask requests, less the same process
serving none.

A count, not a time: a change that adds a system call to every request (a second socket
check at the borrow, a wait for the reset's answer, a flush of its own) fails here. The
default must make exactly one ``sendto`` more than ``reset_on_return=never`` (the
``DISCARD ALL``), and the reset's answer, read at the borrow, replaces the socket check
that ``never`` makes with ``poll``. The requests are 10 ms apart, as invocations are, so
that the reset's answer is in at the next borrow whatever the machine's load (back to
back on a busy machine, a borrow that comes first reads again and waits, and those
counts then depend on the load; the ``sendto`` count never does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def per_request() -> dict[str, dict[str, float]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "syscalls.py"), "--requests", "500", "--gap", "0.01",
         "--json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {row["key"]: row for row in json.loads(done.stdout)}


def test_a_held_connection_makes_one_exchange_per_request(
    per_request: dict[str, dict[str, float]],
) -> None:
    # the yardstick, and proof that the count sees the requests at all
    held = per_request["held"]
    assert held["sendto"] == pytest.approx(1.0, abs=0.01), held
    assert held["recvfrom"] == pytest.approx(1.0, abs=0.05), held


def test_the_reset_adds_one_send_and_replaces_the_borrows_socket_check(
    per_request: dict[str, dict[str, float]],
) -> None:
    never, default = per_request["ours_never"], per_request["ours"]
    assert never["sendto"] == pytest.approx(1.0, abs=0.01), never
    # Whole counts; the margins take answers that came late on a loaded machine (a wait
    # that polls again), never one call more per request.
    assert never["poll"] >= 1.95, never  # the socket check, then the wait for the answer
    assert default["sendto"] == pytest.approx(2.0, abs=0.01), default
    assert 1.95 <= default["recvfrom"] <= 2.6, default
    assert default["poll"] <= 1.6, default
