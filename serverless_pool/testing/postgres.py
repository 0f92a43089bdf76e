"""A throwaway PostgreSQL server for tests, demos and benchmarks.

`PostgresServer` runs ``initdb`` and ``pg_ctl`` from the machine's PostgreSQL server
binaries into a temporary directory, listens on a free port on 127.0.0.1 only, requires
password (SCRAM) authentication over TCP, and removes everything on `stop()`. PostgreSQL
refuses to run as root, so when the caller is root the server runs as the unprivileged
``postgres`` user (override with ``SERVERLESS_POOL_PG_USER``).

It also carries the fault helpers the tests need: end backends, restart the server,
lower ``max_connections``, freeze a backend process.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "Backend",
    "LoopbackEndpoint",
    "PostgresServer",
    "find_bindir",
    "free_port",
    "unprivileged_user",
]

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "superuser-secret"  # noqa: S105 (a throwaway local server)
APP_USER = "app"
APP_PASSWORD = "app-secret"  # noqa: S105
APP_DATABASE = "app"


def find_bindir() -> Path:
    """Locate the directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    explicit = os.environ.get("SERVERLESS_POOL_PG_BINDIR")
    candidates: list[str] = [explicit] if explicit else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; install them with "
        "'apt-get install postgresql' or point SERVERLESS_POOL_PG_BINDIR at their directory"
    )


def unprivileged_user(program: str) -> pwd.struct_passwd | None:
    """The user to run `program` as: None when not root, else ``postgres`` (or
    ``SERVERLESS_POOL_PG_USER``). PostgreSQL and PgBouncer both refuse to run as root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("SERVERLESS_POOL_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"{program} will not run as root and there is no user {name!r} to run it as;"
            " create one or set SERVERLESS_POOL_PG_USER"
        ) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Backend:
    """One row of ``pg_stat_activity`` for a client backend."""

    pid: int
    user: str | None
    database: str | None
    application_name: str
    state: str | None
    query: str


class LoopbackEndpoint:
    """Addresses of a server (PostgreSQL, or a proxy in front of it) on `host`:`port`."""

    host: str
    port: int

    def conninfo(
        self,
        user: str = APP_USER,
        password: str | None = APP_PASSWORD,
        dbname: str = APP_DATABASE,
        **extra: Any,
    ) -> str:
        """A libpq key/value conninfo for a database on this server."""
        params: dict[str, Any] = {"host": self.host, "port": self.port, "user": user}
        if password is not None:
            params["password"] = password
        params["dbname"] = dbname
        params.update(extra)
        return make_conninfo("", **params)

    def url(
        self,
        user: str = APP_USER,
        password: str = APP_PASSWORD,
        dbname: str = APP_DATABASE,
    ) -> str:
        """A ``postgresql://`` URL for a database on this server."""
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"


class PostgresServer(LoopbackEndpoint):
    """A PostgreSQL cluster in a temporary directory, owned by this object.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        settings: dict[str, str] | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.max_connections = max_connections
        self.extra_settings = dict(settings or {})
        self.host = "127.0.0.1"
        self.port = 0
        self.tmpdir: Path | None = None
        self._frozen: set[int] = set()
        self._run_as = unprivileged_user("PostgreSQL")

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None, "the server was not started"
        return self.tmpdir / "data"

    def start(self) -> None:
        """Create the cluster, start it and create the ``app`` role and database."""
        self.tmpdir = Path(tempfile.mkdtemp(prefix="serverless-pool-pg-"))
        self._chown(self.tmpdir)
        pwfile = self.tmpdir / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        self._chown(pwfile)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--pwfile", str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        pwfile.unlink()
        self.port = free_port()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.tmpdir}'",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": "3",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            "log_connections": "off",
        }
        conf.update(self.extra_settings)
        with open(self.datadir / "postgresql.conf", "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        self._pg_ctl("start")
        with self.superuser_connection() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_USER), sql.Literal(APP_PASSWORD)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DATABASE), sql.Identifier(APP_USER)
                )
            )

    def stop(self) -> None:
        """Stop the server (immediately) and remove its directory."""
        if self.tmpdir is None:
            return
        self.resume_all()
        # _pg_ctl reports failures as RuntimeError; a server a test left stopped is fine.
        with contextlib.suppress(subprocess.CalledProcessError, RuntimeError):
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None

    def restart(self, mode: str = "fast") -> None:
        """Stop and start the server; every client connection ends."""
        self._pg_ctl("stop", "-m", mode)
        self._pg_ctl("start")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server but keep its data, for `start_server()` later."""
        self._pg_ctl("stop", "-m", mode)

    def start_server(self) -> None:
        self._pg_ctl("start")

    # -- addresses -------------------------------------------------------------------

    @property
    def superuser_conninfo(self) -> str:
        return self.conninfo(SUPERUSER, SUPERUSER_PASSWORD, "postgres")

    def superuser_connection(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.superuser_conninfo, autocommit=True)

    def execute(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser and return its rows (if any)."""
        with self.superuser_connection() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # -- observation and faults ------------------------------------------------------

    def backends(self, *, application_name: str | None = None) -> list[Backend]:
        """Client backends other than the one asking, optionally by application_name."""
        rows = self.execute(
            "SELECT pid, usename, datname, application_name, state, query"
            " FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND (%s::text IS NULL OR application_name = %s::text)",
            (application_name, application_name),
        )
        return [Backend(*row) for row in rows]

    def terminate_backends(
        self,
        *,
        application_name: str | None = None,
        pids: Sequence[int] | None = None,
        admin: psycopg.Connection[Any] | None = None,
    ) -> int:
        """End client backends (like an idle timeout or an operator would); returns how many.

        Returns once each backend process has exited, so its socket is closed and the
        client's kernel has seen the end of the connection.
        """
        if pids is None:
            pids = [b.pid for b in self.backends(application_name=application_name)]
        with contextlib.ExitStack() as stack:
            if admin is None:
                admin = stack.enter_context(self.superuser_connection())
            ended = [
                pid
                for pid in pids
                if admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            ]
        for pid in ended:
            self.wait_process_gone(pid)
        return len(ended)

    @staticmethod
    def wait_process_gone(pid: int, timeout: float = 10.0) -> None:
        """Wait (bounded) until a server process has exited.

        ``pg_terminate_backend(pid, timeout)`` would do this too, but it polls in 100 ms
        steps; a local process can be watched directly.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.0005)
        raise TimeoutError(f"server process {pid} still runs after {timeout} s")

    def set_max_connections(self, value: int, reserved: int = 3) -> None:
        """Change ``max_connections`` (and the superuser reserve) and restart."""
        self.execute(f"ALTER SYSTEM SET max_connections = {int(value)}")
        self.execute(f"ALTER SYSTEM SET superuser_reserved_connections = {int(reserved)}")
        self.max_connections = value
        self.restart()

    def freeze_backend(self, pid: int) -> None:
        """SIGSTOP one backend: its socket stays open but goes silent."""
        self._frozen.add(pid)
        os.kill(pid, signal.SIGSTOP)

    def thaw_backend(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        self._frozen.discard(pid)

    def resume_all(self) -> None:
        for pid in list(self._frozen):
            with contextlib.suppress(ProcessLookupError):
                self.thaw_backend(pid)
        self._frozen.clear()

    def wait_for_backends(
        self, count: int, *, application_name: str | None = None, timeout: float = 10.0
    ) -> list[Backend]:
        """Poll ``pg_stat_activity`` until exactly `count` backends match (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.backends(application_name=application_name)
            if len(found) == count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    # -- plumbing --------------------------------------------------------------------

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _run(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        user = self._run_as
        result = subprocess.run(
            argv,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            cwd=str(self.tmpdir) if self.tmpdir else None,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout)

    def _pg_ctl(self, *args: str) -> None:
        assert self.tmpdir is not None
        log = self.tmpdir / "server.log"
        try:
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(log), "-w",
                 "-t", "60", *args]
            )  # fmt: skip
        except subprocess.CalledProcessError as err:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {err.output}\n{tail}") from err

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log, for failing tests."""
        assert self.tmpdir is not None
        log = self.tmpdir / "server.log"
        return log.read_text()[-chars:] if log.exists() else ""

    def iter_log(self) -> Iterator[str]:
        assert self.tmpdir is not None
        yield from (self.tmpdir / "server.log").read_text().splitlines()
