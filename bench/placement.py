"""Where the benchmark's processes run: the client on one CPU, the server on another.

Where a backend process happens to be scheduled changes a loopback round trip by more
than the differences the benchmarks measure (±15% on a 2-core machine); pinning gives
every strategy the same placement.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from serverless_pool.testing.postgres import PostgresServer

__all__ = ["pin_client_and_server"]


def pin_client_and_server(server: PostgresServer, stack: ExitStack) -> str:
    """Run this process on one CPU and the server (its backends inherit) on another.

    Call it before the benchmark opens connections. Best effort: without two CPUs or
    the right to pin, nothing changes. Undone when `stack` closes.
    """
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    try:
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
        os.sched_setaffinity(postmaster, {cpus[1]})
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[0]})
    except (OSError, ValueError, IndexError):
        return "not pinned (not permitted)"
    stack.callback(os.sched_setaffinity, 0, before)
    return f"client on CPU {cpus[0]}, server on CPU {cpus[1]}"
