"""Async views and several apps in one process: no connection crosses requests or apps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask_serverless_pool import ServerlessPool

from serverless_pool.testing.postgres import PostgresServer

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]


def test_async_views_get_their_own_connection_per_request(make_app: MakeApp) -> None:
    app, db = make_app(SERVERLESS_POOL_MAX_SIZE=3)
    in_flight = threading.Barrier(3, timeout=10)

    @app.route("/")
    async def index() -> dict[str, object]:
        with db.connection() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()
            # All three requests hold their connection at the same time here.
            await asyncio.to_thread(in_flight.wait)
            with db.connection() as again:
                same = again is conn
            pid_again = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        return {"pid": pid[0], "same": same and pid == pid_again}

    def one_request(_: int) -> dict[str, object]:
        response = app.test_client().get("/")
        assert response.status_code == 200
        body = response.json
        assert isinstance(body, dict)
        return body

    with ThreadPoolExecutor(3) as executor:
        bodies = list(executor.map(one_request, range(3)))
    assert all(body["same"] for body in bodies)
    assert len({body["pid"] for body in bodies}) == 3
    stats = db.get_pool(app).stats()
    assert stats["borrows"] == 3
    assert stats["pool_in_use"] == 0


def test_sequential_async_requests_release_before_the_next(make_app: MakeApp) -> None:
    app, db = make_app(SERVERLESS_POOL_MAX_SIZE=1, SERVERLESS_POOL_ACQUIRE_TIMEOUT=0.5)

    @app.route("/")
    async def index() -> str:
        await asyncio.sleep(0)
        with db.connection() as conn:
            conn.execute("SELECT 1")
        return "ok"

    client = app.test_client()
    # With one connection, a leak would time out the second request.
    assert [client.get("/").status_code for _ in range(5)] == [200] * 5
    assert db.get_pool(app).stats()["pool_in_use"] == 0


def test_two_apps_in_one_process_each_use_their_own_pool(
    make_app: MakeApp, postgres: PostgresServer
) -> None:
    shared = ServerlessPool()
    first, _ = make_app(shared, SERVERLESS_POOL_APPLICATION_NAME="flask-first")
    second, _ = make_app(shared, SERVERLESS_POOL_APPLICATION_NAME="flask-second")
    assert shared.get_pool(first) is not shared.get_pool(second)

    for app in (first, second):

        @app.route("/")
        def whoami() -> str:
            with shared.connection() as conn:
                row = conn.execute("SELECT current_setting('application_name')").fetchone()
            return str(row[0]) if row else ""

    assert first.test_client().get("/").text == "flask-first"
    assert second.test_client().get("/").text == "flask-second"
    with first.app_context():
        assert shared.pool is shared.get_pool(first)
        # A context of the other app inside this one gets the other app's connection.
        with second.app_context(), shared.connection() as conn:
            row = conn.execute("SELECT current_setting('application_name')").fetchone()
            assert row == ("flask-second",)
    # Back to the first app after the second: its own pool again.
    assert first.test_client().get("/").text == "flask-first"
    assert shared.get_pool(first).stats()["borrows"] == 2
    assert shared.get_pool(second).stats()["borrows"] == 2
    assert shared.get_pool(first).stats()["pool_in_use"] == 0
    assert shared.get_pool(second).stats()["pool_in_use"] == 0
    assert {b.application_name for b in postgres.backends()} >= {"flask-first", "flask-second"}
