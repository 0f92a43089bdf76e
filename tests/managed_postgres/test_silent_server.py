"""A server that stops answering mid-statement: the request fails within its deadline.

Two kinds of silence that TCP timeouts cannot see, because the peer's kernel still
acknowledges every packet: the server's backend process stopped with SIGSTOP, and a
relay in front of the server that stops forwarding. The bound is the deadline of
`serverless_pool.deadline` (an invocation's, under ``make_handler``); the documented
slack after it is `silent_server.GRACE` + `CANCEL_TIMEOUT` (0.25 s), asserted here
with a generous margin for a loaded machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from flask_serverless_pool import ServerlessPool as FlaskPool

from serverless_pool import ServerlessPool, deadline_after
from serverless_pool.aws_lambda import make_handler
from serverless_pool.connection import PooledConnection
from serverless_pool.errors import CommitOutcomeUnknown, DeadlineExceeded
from serverless_pool.silent_server import CANCEL_TIMEOUT, GRACE
from serverless_pool.testing.lambda_emulator import lambda_context
from serverless_pool.testing.postgres import PostgresServer
from serverless_pool.testing.relay import Relay

DEADLINE = 1.0
# The documented slack, and room for a machine shared with other test runs.
SLACK = GRACE + CANCEL_TIMEOUT
ALLOWANCE = SLACK + 1.5


@pytest.fixture
def frozen(postgres: PostgresServer) -> Iterator[Callable[[int], None]]:
    pids: list[int] = []

    def freeze(pid: int) -> None:
        pids.append(pid)
        postgres.freeze_backend(pid)

    yield freeze
    for pid in pids:
        postgres.thaw_backend(pid)


def _pid(pool: ServerlessPool) -> int:
    with pool.connection() as conn:
        return conn.info.backend_pid


def test_a_stopped_backend_fails_the_statement_within_the_deadline(
    make_pool: Callable[..., ServerlessPool], frozen: Callable[[int], None]
) -> None:
    pool = make_pool(max_size=1)
    first = _pid(pool)
    # Stopped after the borrow's check: a stopped backend that the borrow finds does not
    # answer the reset of the return, and is replaced before anything is lent.
    with deadline_after(DEADLINE), pool.connection() as conn:
        assert conn.info.backend_pid == first
        frozen(first)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="did not answer before the deadline") as failure:
            conn.execute("SELECT 1")
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + ALLOWANCE
    assert isinstance(failure.value, psycopg.OperationalError)
    assert conn.closed  # never reused
    # The next request, the backend still stopped: a new connection, at once.
    with deadline_after(DEADLINE), pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    assert row[0] != first
    stats = pool.stats()
    assert stats["connections_opened"] == 2
    assert stats["replaced_bad_state"] == 1


def test_a_relay_that_stops_forwarding_fails_the_statement_within_the_deadline(
    postgres: PostgresServer, app_name: str
) -> None:
    with Relay((postgres.host, postgres.port)) as relay, ServerlessPool(
        relay.conninfo(), max_size=1, application_name=app_name, environ={}
    ) as pool:  # fmt: skip
        first = _pid(pool)
        with deadline_after(DEADLINE), pool.connection() as conn:
            relay.go_silent()  # after the borrow's check, before the statement
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                conn.execute("SELECT 1")
        elapsed = time.monotonic() - started
        relay.resume()
        with deadline_after(DEADLINE), pool.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert DEADLINE <= elapsed < DEADLINE + ALLOWANCE
    assert row is not None
    assert row[0] != first


def test_a_commit_the_server_never_answers_has_an_unknown_outcome(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS silent_commits (id uuid PRIMARY KEY)")
    key = uuid.uuid4()

    def insert_then_freeze_before_commit(conn: PooledConnection[tuple[object, ...]]) -> None:
        with conn.transaction():
            conn.execute("INSERT INTO silent_commits VALUES (%s)", (key,))
            postgres.freeze_backend(conn.info.backend_pid)

    try:
        with deadline_after(DEADLINE), pool.connection() as conn:
            with pytest.raises(CommitOutcomeUnknown) as failure:
                insert_then_freeze_before_commit(conn)
            assert conn.closed
    finally:
        postgres.resume_all()
    assert isinstance(failure.value.__cause__, DeadlineExceeded)


def test_the_one_wait_reads_the_deadline_and_the_class_never_changes(
    postgres: PostgresServer,
) -> None:
    """The connection's wait() is one method that reads the deadline of the work in
    progress: bounded within a deadline, psycopg's own outside, and nothing about the
    class changes at the first deadline."""
    code = f"""
import sys
from serverless_pool import ServerlessPool, deadline_after
from serverless_pool.connection import PooledConnection
pool = ServerlessPool({postgres.conninfo()!r}, environ={{}})
with pool.connection() as conn:
    conn.execute("SELECT 1")
before = PooledConnection.__dict__["wait"]
with deadline_after(5), pool.connection() as conn:
    during = PooledConnection.__dict__["wait"] is before
    assert conn.execute("SELECT pg_sleep(0.2), 1").fetchone() == ("", 1)
with pool.connection() as conn:  # no deadline: psycopg's wait, with no bound
    assert conn.execute("SELECT pg_sleep(0.2), 2").fetchone() == ("", 2)
print(during, PooledConnection.__dict__["wait"] is before)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_kernel_timeouts_are_set_unless_the_connection_string_sets_them(
    make_pool: Callable[..., ServerlessPool], postgres: PostgresServer
) -> None:
    with make_pool().connection() as conn:
        params = conn.info.get_parameters()
    assert params["tcp_user_timeout"] == "10000"
    assert (params["keepalives"], params["keepalives_idle"]) == ("1", "5")
    assert (params["keepalives_interval"], params["keepalives_count"]) == ("1", "5")
    with make_pool(postgres.conninfo(keepalives_idle=30), tcp_timeout=0).connection() as conn:
        params = conn.info.get_parameters()
    assert "tcp_user_timeout" not in params
    assert params["keepalives_idle"] == "30"


def test_under_make_handler_the_request_fails_in_time_and_the_next_one_succeeds(
    postgres: PostgresServer, app_name: str, frozen: Callable[[int], None]
) -> None:
    app = Flask(app_name)
    app.config.update(
        SERVERLESS_POOL_DATABASE_URL=postgres.conninfo(),
        SERVERLESS_POOL_MAX_SIZE=1,
        SERVERLESS_POOL_APPLICATION_NAME=app_name,
    )
    db = FlaskPool(app)
    stop_next: list[int] = []

    @app.route("/", defaults={"anything": ""}, methods=["GET", "POST"])
    @app.route("/<path:anything>", methods=["GET", "POST"])
    def pid(anything: str) -> dict[str, int]:
        with db.connection() as conn:
            if stop_next:  # the server stops answering mid-request, after the borrow
                frozen(stop_next.pop())
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return {"pid": row[0]}

    handler = make_handler(app, deadline_margin=0.5)
    events = Path(__file__).parents[1] / "aws_lambda" / "events"
    event = json.loads((events / "http_api_v2.json").read_text())
    timeout_ms = 2000

    def invoke() -> tuple[int, dict[str, object], float]:
        context = lambda_context(timeout_ms)
        started = time.monotonic()
        response = handler(event, context)
        elapsed = time.monotonic() - started
        status = response["statusCode"]
        return status, json.loads(response["body"]) if status == 200 else {}, elapsed

    try:
        status, body, _ = invoke()
        assert status == 200
        stop_next.append(int(body["pid"]))  # type: ignore[call-overload]
        status, _, elapsed = invoke()
        assert status == 500
        # Lambda would end the invocation at 2 s; the handler's deadline is 0.5 s before.
        assert elapsed < (timeout_ms / 1000 - 0.5) + ALLOWANCE
        status, after, _ = invoke()
        assert status == 200
        assert after["pid"] != body["pid"]
    finally:
        handler.close()
        db.get_pool(app).close()
