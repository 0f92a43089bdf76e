"""What one more message exchange costs the server, whatever the statement.

    python bench/message_cost.py [--statements 20000]

Why the session reset costs more in time than in the client's instructions: each
statement, ``DISCARD ALL`` as much as ``SELECT 1``, is one more message the server
receives, wakes up for, answers and goes back to sleep after. This sends each statement
of the list the given number of times on one connection, one after the other, and
reads the backend's CPU time (user + system, from ``/proc/<pid>/stat``) before and after:
CPU microseconds per statement. On a virtual machine, waking a process on another CPU is
dear, and the per-message part dominates what the statement itself does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from serverless_pool.testing.postgres import PostgresServer  # noqa: E402

STATEMENTS = (
    b"SELECT 1",
    b"DISCARD ALL",
    b"RESET ALL",
    b"DISCARD TEMP",
    b"UNLISTEN *",
    b"SELECT pg_advisory_unlock_all()",
    b"",  # an empty query: the message and nothing else
)


def backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20_000)
    args = parser.parse_args(argv)
    with PostgresServer() as server, psycopg.connect(server.conninfo(), autocommit=True) as conn:
        pgconn = conn.pgconn
        pid = conn.info.backend_pid
        print("| statement | server CPU µs per statement |\n|---|---:|")
        for statement in STATEMENTS:
            before = backend_cpu_seconds(pid)
            for _ in range(args.statements):
                pgconn.send_query(statement)
                while pgconn.get_result() is not None:
                    pass
            spent = backend_cpu_seconds(pid) - before
            label = statement.decode() or "(empty query)"
            print(f"| `{label}` | {spent / args.statements * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
