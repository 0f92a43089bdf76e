"""Process lifecycle: SIGTERM, exit, fork and SnapStart never strand a server session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import psycopg

from serverless_pool import ServerlessPool, lifecycle
from serverless_pool.testing.postgres import PostgresServer


def _run_child(code: str, conninfo: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), conninfo, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_SERVE_THEN_WAIT = """
    import sys, time, signal
    from serverless_pool import ServerlessPool
    {before}
    pool = ServerlessPool(sys.argv[1], application_name=sys.argv[2])
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    print("ready", flush=True)
    time.sleep(30)
    print("not killed", flush=True)
"""


def test_sigterm_closes_the_pool_and_the_process_still_dies_of_it(
    postgres: PostgresServer, app_name: str
) -> None:
    child = _run_child(_SERVE_THEN_WAIT.format(before=""), postgres.conninfo(), app_name)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert len(postgres.backends(application_name=app_name)) == 1
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=10)
    assert "not killed" not in out
    assert child.returncode == -signal.SIGTERM
    assert postgres.wait_for_backends(0, application_name=app_name) == []
    # a clean goodbye: the server logged no "unexpected EOF" for this session
    assert "unexpected EOF" not in postgres.log_tail()


def test_sigterm_chains_the_handler_installed_before(
    postgres: PostgresServer, app_name: str
) -> None:
    before = """
    def earlier(signum, frame):
        print("earlier handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, earlier)
    """
    child = _run_child(
        _SERVE_THEN_WAIT.format(before=textwrap.dedent(before).replace("\n", "\n    ")),
        postgres.conninfo(),
        app_name,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=10)
    assert "earlier handler ran" in out
    assert child.returncode == 3
    assert postgres.wait_for_backends(0, application_name=app_name) == []


def test_normal_exit_closes_the_pool(postgres: PostgresServer, app_name: str) -> None:
    code = """
    import sys
    from serverless_pool import ServerlessPool
    pool = ServerlessPool(sys.argv[1], application_name=sys.argv[2])
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    """
    child = _run_child(code, postgres.conninfo(), app_name)
    child.communicate(timeout=20)
    assert child.returncode == 0
    assert postgres.wait_for_backends(0, application_name=app_name) == []
    assert "unexpected EOF" not in postgres.log_tail()


def test_a_forked_child_never_uses_the_parents_connection(
    postgres: PostgresServer, pool: ServerlessPool
) -> None:
    with pool.connection() as conn:
        parent_pid = conn.info.backend_pid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            with pool.connection() as conn:
                own = conn.execute("SELECT pg_backend_pid()").fetchone()
            os.write(write_end, str(own[0] if own else 0).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    child_backend = int(os.read(read_end, 64) or b"0")
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_backend not in (0, parent_pid)
    # the parent's session was not disturbed by the child
    with pool.connection() as conn:
        assert conn.info.backend_pid == parent_pid
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["connections_opened"] == 1


def test_snapshot_hooks_close_before_and_reconnect_lazily_after(
    postgres: PostgresServer, pool: ServerlessPool, app_name: str
) -> None:
    with pool.connection():
        pass
    lifecycle._before_snapshot()
    assert postgres.wait_for_backends(0, application_name=app_name) == []
    lifecycle._after_restore()
    assert postgres.backends(application_name=app_name) == []  # lazily: nothing yet
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_lambda_snapstart_hooks_are_registered_when_available() -> None:
    import snapshot_restore_py  # type: ignore[import-untyped]  # shipped with awslambdaric

    ServerlessPool("host=127.0.0.1 dbname=unused").close()  # the first pool installs them
    before = [hook for hook, *_ in snapshot_restore_py.get_before_snapshot()]
    after = [hook for hook, *_ in snapshot_restore_py.get_after_restore()]
    assert before.count(lifecycle._before_snapshot) == 1
    assert after.count(lifecycle._after_restore) == 1


def test_idle_connections_past_max_idle_are_closed_at_the_next_borrow(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_idle=0.05)
    with pool.connection() as conn:
        first = conn.info.backend_pid
    threading_wait(0.1)
    with pool.connection() as conn:
        assert conn.info.backend_pid != first
    assert pool.stats()["replaced_idle_too_long"] == 1


def test_min_size_keeps_connections_past_max_idle(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=2, min_size=1, max_idle=0.05)
    with pool.connection() as first, pool.connection() as second:
        pids = {first.info.backend_pid, second.info.backend_pid}
    threading_wait(0.1)
    with pool.connection() as conn:
        # one of the two idle ones was closed; the other kept to honour min_size
        assert conn.info.backend_pid in pids
    stats = pool.stats()
    assert stats["replaced_idle_too_long"] == 1
    assert stats["pool_size"] == 1


def test_connections_past_max_lifetime_are_replaced(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_lifetime=0.05)
    with pool.connection() as conn:
        first = conn.info.backend_pid
        threading_wait(0.1)
    with pool.connection() as conn:
        assert conn.info.backend_pid != first
    assert pool.stats()["replaced_expired"] == 1


def test_server_side_idle_timeout_reclaims_the_slot_and_the_pool_recovers(
    postgres: PostgresServer, make_pool: Callable[..., ServerlessPool], app_name: str
) -> None:
    pool = make_pool(idle_session_timeout=0.2, idle_in_transaction_session_timeout=5)
    with pool.connection() as conn:
        assert conn.execute("SHOW idle_session_timeout").fetchone() == ("200ms",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("5s",)
    # as if frozen: the server ends the idle session by itself
    assert postgres.wait_for_backends(0, application_name=app_name, timeout=10) == []
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # the timeouts are session defaults: a reset keeps them
        conn.execute("SET work_mem = '5MB'")
    with pool.connection() as conn:
        assert conn.execute("SHOW idle_session_timeout").fetchone() == ("200ms",)


def test_timeouts_in_the_conninfo_options_are_kept(postgres: PostgresServer, app_name: str) -> None:
    conninfo = postgres.conninfo(options="-c work_mem=6MB")
    with (
        ServerlessPool(conninfo, application_name=app_name, statement_timeout=3) as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SHOW work_mem").fetchone() == ("6MB",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("3s",)


def threading_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)


def test_psycopg_errors_are_the_base_of_pool_errors() -> None:
    from serverless_pool import ConnectionFailed, PoolClosed, PoolTimeout

    for cls in (ConnectionFailed, PoolClosed, PoolTimeout):
        assert issubclass(cls, psycopg.OperationalError)
