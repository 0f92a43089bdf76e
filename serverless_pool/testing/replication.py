"""A streaming replica of a `PostgresServer`, for failover tests.

`StandbyServer.clone(primary)` takes a base backup of the primary with ``pg_basebackup``
(as the unprivileged user the servers run as), starts it as a hot standby streaming from
the primary on a port of its own, and can be promoted. `demote()` brings a stopped
primary back read-only, as a failed-over writer comes back as a replica.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .postgres import SUPERUSER, SUPERUSER_PASSWORD, PostgresServer, free_port

__all__ = ["StandbyServer", "demote", "is_in_recovery"]


class StandbyServer(PostgresServer):
    """A hot standby of another `PostgresServer`; `stop()` removes it."""

    @classmethod
    def clone(cls, primary: PostgresServer, *, name: str = "standby1") -> StandbyServer:
        """Base-backup `primary` and start streaming from it.

        The standby's ``cluster_name`` is `name`, the name the primary sees it by in
        ``pg_stat_replication`` and ``synchronous_standby_names``.
        """
        standby = cls(bindir=primary.bindir)
        standby.tmpdir = Path(tempfile.mkdtemp(prefix="serverless-pool-standby-"))
        standby._chown(standby.tmpdir)
        standby.port = free_port()
        standby._run(
            [
                str(primary.bindir / "pg_basebackup"),
                "-h", primary.host, "-p", str(primary.port), "-U", SUPERUSER,
                "-D", str(standby.datadir),
                "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast",
                "--no-sync",
            ],
            env={"PGPASSWORD": SUPERUSER_PASSWORD},
        )  # fmt: skip
        with open(standby.datadir / "postgresql.conf", "a") as f:
            f.write(f"port = {standby.port}\n")
            f.write(f"unix_socket_directories = '{standby.tmpdir}'\n")
            f.write(f"cluster_name = '{name}'\n")
        standby._pg_ctl("start")
        return standby

    def promote(self) -> None:
        """Make this standby the primary (returns once it accepts writes)."""
        self._pg_ctl("promote")
        deadline = time.monotonic() + 30
        while is_in_recovery(self):
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not leave recovery within 30 s")
            time.sleep(0.05)


def demote(server: PostgresServer) -> None:
    """Start a stopped primary as a read-only hot standby of nothing (it replays its own
    WAL, then serves reads): a failed-over writer come back as a replica."""
    signal = server.datadir / "standby.signal"
    signal.touch()
    server._chown(signal)
    server.start_server()


def is_in_recovery(server: PostgresServer) -> bool:
    rows = server.execute("SELECT pg_is_in_recovery()")
    return bool(rows[0][0])
