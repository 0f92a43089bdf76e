"""ASGI requests served concurrently, and fork safety (gunicorn --preload)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.db import connection
from django_serverless_pool.release import pool_of, release_connections
from django_testkit import APP_NAME, lambda_event
from shop.models import Product

from serverless_pool.aws_lambda import make_handler
from serverless_pool.testing.lambda_emulator import lambda_context
from serverless_pool.testing.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True)


async def _get(app: Any, path: str) -> tuple[int, bytes]:
    """One HTTP GET through a real ASGI application, as an ASGI server would send it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, body


def test_concurrent_asgi_requests_leak_no_connection(postgres: PostgresServer) -> None:
    Product.objects.create(name="first", price_cents=1)
    release_connections()
    app = get_asgi_application()
    paths = ["/t/async-count", "/t/sync-slow", "/t/one"] * 20

    async def serve() -> list[tuple[int, bytes]]:
        return await asyncio.gather(*(_get(app, p) for p in paths))

    results = asyncio.run(serve())
    assert [status for status, _ in results] == [200] * len(paths)
    assert json.loads(results[0][1]) == {"count": 1, "first": "first"}
    stats = pool_of("default").stats()
    assert stats["pool_in_use"] == 0
    assert stats["pool_size"] <= 4
    sessions = postgres.backends(application_name=APP_NAME)
    assert len(sessions) <= 4
    assert all(s.state == "idle" for s in sessions)


def test_an_async_view_that_raises_returns_its_connection(postgres: PostgresServer) -> None:
    release_connections()
    app = get_asgi_application()

    async def serve() -> list[tuple[int, bytes]]:
        return await asyncio.gather(*(_get(app, "/t/async-raises") for _ in range(8)))

    assert [status for status, _ in asyncio.run(serve())] == [500] * 8
    assert pool_of("default").stats()["pool_in_use"] == 0
    assert all(s.state == "idle" for s in postgres.backends(application_name=APP_NAME))


def test_500_async_requests_through_make_handler_return_every_connection(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    Product.objects.create(name="first", price_cents=1)
    release_connections()
    handler = make_handler(get_asgi_application())
    assert handler.interface == "asgi"
    paths = ["/t/async-mixed", "/t/async-count", "/t/sync-slow"]
    ended = 0
    try:
        with caplog.at_level(logging.WARNING, logger="serverless_pool"):
            for i in range(500):
                if i % 25 == 24:  # the server ends the idle sessions between invocations
                    ended += postgres.terminate_backends(application_name=APP_NAME)
                response = handler(lambda_event(paths[i % 3]), lambda_context())
                assert response["statusCode"] == 200, (i, response)
                assert pool_of("default").stats()["pool_in_use"] == 0, i
    finally:
        handler.close()  # the instance's event loop
    assert ended >= 10  # sessions really were ended under the pool
    assert json.loads(response["body"]) == {"count": 1, "first": "first"}
    # Nothing was left for make_handler's safety net to take back.
    assert not [r for r in caplog.records if "still borrowed" in r.getMessage()]
    sessions = postgres.backends(application_name=APP_NAME)
    assert 1 <= len(sessions) <= pool_of("default").settings.max_size
    assert all(s.state == "idle" for s in sessions)


def test_500_concurrent_async_requests_through_the_asgi_handler_return_every_connection(
    postgres: PostgresServer,
) -> None:
    Product.objects.create(name="first", price_cents=1)
    release_connections()
    app = get_asgi_application()
    max_size = pool_of("default").settings.max_size

    async def serve(batch: int) -> list[tuple[int, bytes]]:
        paths = ["/t/async-mixed", "/t/async-count", "/t/sync-slow", "/t/one"]
        return await asyncio.gather(*(_get(app, paths[i % 4]) for i in range(batch)))

    statuses: list[int] = []
    peak = 0
    for _ in range(20):
        results = asyncio.run(serve(25))
        statuses += [status for status, _ in results]
        assert json.loads(results[0][1]) == {"count": 1, "counted": 1, "exists": True}
        assert pool_of("default").stats()["pool_in_use"] == 0
        sessions = postgres.backends(application_name=APP_NAME)
        peak = max(peak, len(sessions))
        assert all(s.state == "idle" for s in sessions)
        postgres.terminate_backends(application_name=APP_NAME)  # ended while idle
    assert statuses == [200] * 500
    assert 1 <= peak <= max_size


def test_a_forked_child_never_uses_the_parents_connection() -> None:
    with connection.cursor() as cursor:  # e.g. a query at import time with --preload
        cursor.execute("SELECT pg_backend_pid()")
        (parent_pid,) = cursor.fetchone()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        try:
            os.close(read)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                (pid,) = cursor.fetchone()
            release_connections()
            os.write(write, str(pid).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_pid = int(pipe.read() or 0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid not in (0, parent_pid)
    # The parent's session survived the child (no Terminate sent on its socket).
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone() == (parent_pid,)
