"""System calls per Flask request, counted: where the session reset's time goes.

    python bench/syscalls.py [--requests 2000] [--gap 0] [--json]

Instruction counts (``bench/instructions.py``) stop at the kernel's door, and timings
move too much on a shared machine to say which system call a strategy adds. A count of
system calls repeats. Each strategy serves Flask requests (a plain WSGI call, as in
``bench/bench_flask.py``) in a process of its own under ``strace -f -c``, once with
`--requests` requests and once with none; the difference, divided by the requests, is
what a request costs, the set-up cancelled out. Needs ``strace``.

Whether the reset's answer is in when the next borrow comes depends on the machine's
load: when it is not, the borrow reads again and waits (more ``recvfrom`` and ``poll``).
`--gap` pauses between requests, as an instance does between invocations, so that the
answer is always in and the counts repeat on a busy machine too; ``sendto`` does not
depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WARMUP = 100
SHOWN = ("sendto", "recvfrom", "poll")

STRATEGIES = (
    ("held", "held global connection"),
    ("ours_never", "serverless-pool, reset_on_return=never"),
    ("ours", "serverless-pool, default (reset on every return)"),
)


def _child(key: str, conninfo: str, requests: int, gap: float) -> None:
    sys.path.insert(0, str(HERE))
    import bench_flask

    request, close = bench_flask._setup(bench_flask.factory_named(key), conninfo)()
    for _ in range(WARMUP + requests):
        request()
        if gap:
            time.sleep(gap)
    close()


def _calls(summary: Path) -> dict[str, int]:
    """System call -> calls, from a ``strace -c`` summary."""
    counts: dict[str, int] = {}
    for line in summary.read_text().splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(fields) >= 5 and fields[3].isdigit() and not line.startswith("%"):
            counts[fields[-1]] = int(fields[3])
    return counts


def count(key: str, conninfo: str, requests: int, gap: float, workdir: Path) -> dict[str, int]:
    out = workdir / f"{key}-{requests}.strace"
    argv = [
        "strace", "-f", "-c", "-o", str(out),
        sys.executable, str(Path(__file__).resolve()),
        "--child", key, conninfo, str(requests), str(gap),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"counting {key} failed:\n{done.stderr[-4000:]}")
    return _calls(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between requests")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        key, conninfo, requests, gap = args.child
        _child(key, conninfo, int(requests), float(gap))
        return 0
    if shutil.which("strace") is None:
        print("strace is not installed", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from serverless_pool.testing.postgres import PostgresServer

    rows = []
    with PostgresServer() as server, tempfile.TemporaryDirectory() as tmp:
        conninfo = server.conninfo(application_name="bench")
        for key, label in STRATEGIES:
            loaded = count(key, conninfo, args.requests, args.gap, Path(tmp))
            idle = count(key, conninfo, 0, args.gap, Path(tmp))
            per_request = {
                name: (loaded.get(name, 0) - idle.get(name, 0)) / args.requests for name in SHOWN
            }
            rows.append({"key": key, "strategy": label, **per_request})
            print(f"  {label}: {per_request}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| Flask request | " + " | ".join(f"`{name}`" for name in SHOWN) + " |")
    print("|---|" + "---:|" * len(SHOWN))
    for row in rows:
        print(f"| {row['strategy']} | " + " | ".join(f"{row[name]:.2f}" for name in SHOWN) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
