"""The README's demo runs end to end and shows what it claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_shows_the_pool_surviving_what_breaks_a_held_connection() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "held connection failed 4 of 5 requests" in out
    assert "ServerlessPool failed 0 of 5" in out
    assert "the shop on the Lambda emulator failed 0 of 4" in out
    # The demo ends with a short fleet on the emulator: 9 instances for 3 slots.
    assert "A fleet on the Lambda emulator: 9 instances of the real runtime for 3" in out
    assert "ServerlessPool failed 0 of 36 (0 without its extension)" in out
    assert "behind PgBouncer 0 of 36." in out
    assert "connect per request failed 0 of" not in out
    assert "session on the server afterwards: ['idle']" in out
    assert "app-secret" not in out + done.stderr
