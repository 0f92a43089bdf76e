"""A throwaway PgBouncer in front of a `PostgresServer`, for tests, demos and benchmarks.

`PgBouncerServer` runs the machine's ``pgbouncer`` binary in the foreground from a
temporary directory, on a free port on 127.0.0.1, in transaction pooling mode by
default, with a SCRAM ``auth_file``. Like PostgreSQL it refuses to run as root, so it
runs as the same unprivileged user as the server (``postgres``, or
``SERVERLESS_POOL_PG_USER``).

It carries the fault helpers the tests need: its admin console (``RECONNECT``,
``KILL``, ``PAUSE``/``RESUME``, ``SHOW``), and a restart of the process on the same port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from .postgres import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    LoopbackEndpoint,
    PostgresServer,
    free_port,
    unprivileged_user,
)

__all__ = ["ADMIN_PASSWORD", "ADMIN_USER", "PgBouncerServer", "find_pgbouncer"]

ADMIN_USER = "pgbouncer_admin"
ADMIN_PASSWORD = "admin-secret"  # noqa: S105 (a throwaway local proxy)
_POOL_MODES = ("session", "transaction", "statement")


def find_pgbouncer() -> Path:
    """Locate the ``pgbouncer`` binary (``SERVERLESS_POOL_PGBOUNCER`` overrides)."""
    explicit = os.environ.get("SERVERLESS_POOL_PGBOUNCER")
    candidates = [explicit] if explicit else []
    candidates += [shutil.which("pgbouncer") or "", "/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise RuntimeError(
        "PgBouncer was not found; install it with 'apt-get install pgbouncer' or point"
        " SERVERLESS_POOL_PGBOUNCER at the binary"
    )


class PgBouncerServer(LoopbackEndpoint):
    """A PgBouncer process in a temporary directory, owned by this object.

    :param backend: the running `PostgresServer` to pool connections to.
    :param pool_mode: ``transaction`` (default), ``session`` or ``statement``.
    :param default_pool_size: server connections per user and database.
    :param settings: extra ``[pgbouncer]`` settings, written as given.
    :param plain_passwords: write plain passwords to the auth_file instead of the
        server's SCRAM secrets.
    :param connect_query: a query PgBouncer runs on each new server connection (e.g.
        ``SET idle_session_timeout = 0``, to exempt its own sessions from a server-wide
        timeout meant for clients that connect directly).

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        backend: PostgresServer,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 2,
        settings: dict[str, str] | None = None,
        plain_passwords: bool = False,
        connect_query: str | None = None,
    ) -> None:
        if pool_mode not in _POOL_MODES:
            raise ValueError(
                f"pool_mode: expected one of {', '.join(_POOL_MODES)}, got {pool_mode!r}"
            )
        self.backend = backend
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.extra_settings = dict(settings or {})
        self.plain_passwords = plain_passwords
        if connect_query is not None and "'" in connect_query:
            raise ValueError("connect_query: single quotes cannot be written to pgbouncer.ini")
        self.connect_query = connect_query
        self.binary = find_pgbouncer()
        self.host = "127.0.0.1"
        self.port = 0
        self.tmpdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as = unprivileged_user("PgBouncer")

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> PgBouncerServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration and the auth_file, start PgBouncer, wait until it listens."""
        self.tmpdir = Path(tempfile.mkdtemp(prefix="serverless-pool-pgbouncer-"))
        self.port = free_port()
        self._write_auth_file()
        self._write_config()
        self._chown(self.tmpdir)
        self.start_process()

    def stop(self) -> None:
        """Stop PgBouncer (immediately) and remove its directory."""
        if self.tmpdir is None:
            return
        self.stop_process()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None

    def start_process(self, timeout: float = 10.0) -> None:
        """Start the process on the configured port and wait until it accepts connections."""
        assert self.tmpdir is not None, "the proxy was not started"
        user = self._run_as
        self._process = subprocess.Popen(
            [str(self.binary), str(self.tmpdir / "pgbouncer.ini")],
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(self.tmpdir),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with status {self._process.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            if time.monotonic() > deadline:
                self.stop_process()
                raise RuntimeError(
                    f"pgbouncer did not listen within {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop_process(self, *, graceful: bool = False, timeout: float = 10.0) -> None:
        """End the process: SIGTERM drops every connection at once; `graceful` waits.

        ``graceful`` sends SIGINT, PgBouncer's safe shutdown (it waits for running
        transactions), and falls back to SIGKILL after `timeout`.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT if graceful else signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self) -> None:
        """Stop and start PgBouncer on the same port; every client connection ends."""
        self.stop_process()
        self.start_process()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the proxy is not running"
        return self._process.pid

    # -- admin console (conninfo() and url() come from LoopbackEndpoint) -----------

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run one admin console command (``SHOW POOLS``, ``RECONNECT app``...).

        The console speaks only the simple query protocol, hence the raw libpq call.
        """
        conninfo = self.conninfo(ADMIN_USER, ADMIN_PASSWORD, "pgbouncer")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            result = conn.pgconn.exec_(command.encode())
            if result.status not in (
                psycopg.pq.ExecStatus.COMMAND_OK,
                psycopg.pq.ExecStatus.TUPLES_OK,
            ):
                message = (result.error_message or b"").decode(errors="replace").strip()
                raise RuntimeError(f"pgbouncer admin command {command!r} failed: {message}")
            names = [(result.fname(i) or b"").decode() for i in range(result.nfields)]
            rows = []
            for row in range(result.ntuples):
                values = [result.get_value(row, col) for col in range(result.nfields)]
                rows.append(
                    {
                        name: None if value is None else value.decode()
                        for name, value in zip(names, values, strict=True)
                    }
                )
            return rows

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW POOLS``, ``SHOW SERVERS``, ``SHOW CLIENTS``, ``SHOW STATS``..."""
        return self.admin(f"SHOW {what.upper()}")

    def reconnect(self, dbname: str = APP_DATABASE) -> None:
        """Close each server connection as soon as it is released (a rolling reconnect)."""
        self.admin(f"RECONNECT {dbname}")

    def kill(self, dbname: str = APP_DATABASE) -> None:
        """Drop every client and server connection of `dbname` at once.

        ``KILL`` also pauses the database; it is resumed so that new clients get in,
        which is what an operator's kill looks like from the application's side.
        """
        self.admin(f"KILL {dbname}")
        self.admin(f"RESUME {dbname}")

    def pause(self, dbname: str = APP_DATABASE) -> None:
        self.admin(f"PAUSE {dbname}")

    def resume(self, dbname: str = APP_DATABASE) -> None:
        self.admin(f"RESUME {dbname}")

    def server_pids(self, dbname: str = APP_DATABASE) -> list[int]:
        """PostgreSQL backend pids of this proxy's server connections to `dbname`."""
        return [
            int(row["remote_pid"])
            for row in self.show("servers")
            if row.get("database") == dbname and row.get("remote_pid") not in (None, "0")
        ]

    def log_tail(self, chars: int = 4000) -> str:
        """The end of PgBouncer's log, for failing tests."""
        if self.tmpdir is None:
            return ""
        log = self.tmpdir / "pgbouncer.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    # -- plumbing --------------------------------------------------------------------

    def _write_auth_file(self) -> None:
        assert self.tmpdir is not None
        if self.plain_passwords:
            app_secret = APP_PASSWORD
        else:
            # PgBouncer can authenticate both sides with the server's SCRAM secret, so
            # no plain password needs to be written anywhere.
            rows = self.backend.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (APP_USER,)
            )
            app_secret = str(rows[0][0])
        lines = [
            f'"{APP_USER}" "{app_secret}"',
            f'"{ADMIN_USER}" "{ADMIN_PASSWORD}"',
        ]
        path = self.tmpdir / "userlist.txt"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        self._chown(path)

    def _write_config(self) -> None:
        assert self.tmpdir is not None
        backend = self.backend
        settings = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.tmpdir / "userlist.txt"),
            "admin_users": ADMIN_USER,
            "stats_users": ADMIN_USER,
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.default_pool_size),
            "max_client_conn": "200",
            "logfile": str(self.tmpdir / "pgbouncer.log"),
            "pidfile": str(self.tmpdir / "pgbouncer.pid"),
            # psycopg sends none of these, but other drivers (and libpq's
            # PGOPTIONS) might; PgBouncer refuses unknown startup parameters.
            "ignore_startup_parameters": "extra_float_digits",
            "server_login_retry": "1",
            "log_connections": "1",
            "log_disconnections": "1",
        }
        settings.update(self.extra_settings)
        target = f"host={backend.host} port={backend.port}"
        if self.connect_query is not None:
            target += f" connect_query='{self.connect_query}'"
        lines = [
            "[databases]",
            f"* = {target}",
            "",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        path = self.tmpdir / "pgbouncer.ini"
        path.write_text("\n".join(lines) + "\n")
        self._chown(path)

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
