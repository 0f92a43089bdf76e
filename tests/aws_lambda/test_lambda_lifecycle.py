"""The per-invocation lifecycle around the app, against the shared PostgreSQL server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask import Flask, jsonify
from lambda_testkit import decode_response, load_event

from serverless_pool import PoolTimeout, ServerlessPool
from serverless_pool.aws_lambda import make_handler
from serverless_pool.errors import SettingsError
from serverless_pool.testing.lambda_emulator import lambda_context
from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

MakePool = Callable[..., ServerlessPool]


def v2_event(path: str) -> dict[str, Any]:
    event = load_event("http_api_v2")
    event.update(rawPath=path, rawQueryString="", body="", isBase64Encoded=False)
    event.pop("queryStringParameters")
    event["requestContext"]["http"].update(method="GET", path=path)
    return event


def call(handler: Callable[..., Any], path: str, remaining_ms: int = 30_000) -> Any:
    status, _headers, body = decode_response(handler(v2_event(path), lambda_context(remaining_ms)))
    return status, json.loads(body) if body else None


def test_deadline_bounds_the_wait_for_a_connection(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1, acquire_timeout=60)
    app = Flask("deadline")

    @app.route("/two")
    def two() -> Any:
        with pool.connection():
            started = time.monotonic()
            try:
                with pool.connection():
                    return jsonify(error=None)
            except PoolTimeout as err:
                return jsonify(error=str(err), waited=time.monotonic() - started)

    handler = make_handler(app, deadline_margin=0.5)
    status, body = call(handler, "/two", remaining_ms=1500)
    assert status == 200
    assert body["error"]
    assert "no free connection" in body["error"]
    # Bounded by the invocation (1.5 s - 0.5 s margin), not by acquire_timeout=60.
    assert body["waited"] < 30


def test_leaked_connection_is_returned_rolled_back_and_reused(
    make_pool: MakePool, postgres: PostgresServer, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(max_size=1)
    app = Flask("leak")

    @app.route("/leak")
    def leak() -> Any:
        conn = pool.acquire()  # never released: the bug under test
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        return jsonify(pid=conn.info.backend_pid)

    handler = make_handler(app)
    with caplog.at_level(logging.WARNING, logger="serverless_pool"):
        status, first = call(handler, "/leak")
    assert status == 200
    assert pool.stats()["pool_in_use"] == 0
    assert "still borrowed" in caplog.text
    (backend,) = postgres.backends(application_name=app_name)
    assert backend.state == "idle"  # the transaction was rolled back, not left open
    _status, second = call(handler, "/leak")
    assert second["pid"] == first["pid"]  # the same connection, reused
    assert pool.stats()["rollbacks"] >= 2


def test_warmup_events_do_not_reach_the_app(
    make_pool: MakePool, postgres: PostgresServer, app_name: str
) -> None:
    pool = make_pool()
    calls = []
    app = Flask("warm")

    @app.route("/")
    def index() -> Any:
        calls.append(1)
        return "ok"

    handler = make_handler(app, warmup_connect=True)
    result = handler(load_event("scheduled_event"), lambda_context())
    assert (result["warmup"], result["coldStart"]) == (True, True)
    assert result["idleConnections"] >= 1  # every live pool of the process counts
    assert handler(json.loads('{"serverless-pool-warmup": true}'), lambda_context())["warmup"]
    assert calls == []
    assert len(postgres.backends(application_name=app_name)) == 1
    assert pool.stats()["pool_available"] == 1
    # without warmup_connect, a warm-up opens nothing (other tests' pools may be alive
    # in this process, so look at a pool of this test's own on the server)
    untouched = make_pool(application_name=f"{app_name}-untouched")
    custom = make_handler(app, warmup_marker="ping")
    assert custom({"ping": 1}, lambda_context())["warmup"] is True
    assert calls == []
    assert postgres.backends(application_name=f"{app_name}-untouched") == []
    assert untouched.stats()["pool_size"] == 0


def test_emf_line_per_invocation(make_pool: MakePool) -> None:
    pool = make_pool(password=APP_PASSWORD)
    app = Flask("metrics")

    @app.route("/q")
    def query() -> Any:
        with pool.connection() as conn:
            return jsonify(conn.execute("SELECT 1").fetchone())

    stream = io.StringIO()
    handler = make_handler(app, metrics=True, metrics_stream=stream, metrics_namespace="Tests")
    call(handler, "/q")
    call(handler, "/q")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Tests"
    names = {m["Name"] for m in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"PoolHits", "NewConnections", "ReplacedConnections", "WaitTime"} <= names
    assert (first["ColdStart"], first["NewConnections"], first["PoolHits"]) == (1, 1, 0)
    assert (second["ColdStart"], second["NewConnections"], second["PoolHits"]) == (0, 0, 1)
    assert pool.name in second["Pools"]
    assert APP_PASSWORD not in stream.getvalue()


def test_connect_on_init_opens_the_connection_before_the_first_event(
    make_pool: MakePool, postgres: PostgresServer, app_name: str
) -> None:
    make_pool()
    make_handler(Flask("init"), connect_on_init=True)
    assert len(postgres.backends(application_name=app_name)) == 1


@pytest.mark.parametrize("enabled", [True, False])
def test_statement_timeout_bounds_every_statement_by_the_invocations_deadline(
    make_pool: MakePool, enabled: bool
) -> None:
    pool = make_pool()
    app = Flask("stmt")
    bound = "SELECT current_setting('statement_timeout')"

    @app.route("/slow")
    def slow() -> Any:
        with pool.connection() as conn:
            autocommit = conn.execute(bound).fetchone()
            with conn.transaction():
                in_transaction = conn.execute(bound).fetchone()
            started = time.monotonic()
            try:
                conn.execute("SELECT pg_sleep(%s)", (0.1 if not enabled else 30,))
            except psycopg.errors.QueryCanceled:
                return jsonify(canceled=True, autocommit=autocommit,
                               in_transaction=in_transaction,
                               took=time.monotonic() - started)  # fmt: skip
            return jsonify(canceled=False, autocommit=autocommit, in_transaction=in_transaction)

    handler = make_handler(app, statement_timeout=enabled, deadline_margin=0.5)
    status, body = call(handler, "/slow", remaining_ms=2000)
    assert status == 200
    if enabled:
        assert body["canceled"] is True
        # 2 s left, less the 0.5 s margin: the server got the time left, in ms.
        for row in (body["autocommit"], body["in_transaction"]):
            assert row[0].endswith("ms")
            assert 500 < int(row[0][:-2]) <= 1500
        assert body["took"] < 5  # the server ended the 30 s sleep at the deadline
    else:
        assert body == {"canceled": False, "autocommit": ["0"], "in_transaction": ["0"]}


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_statement_timeout_must_be_a_boolean(value: object) -> None:
    with pytest.raises(SettingsError, match=r"statement_timeout: expected True .* got"):
        make_handler(Flask("bad"), statement_timeout=value)


def test_asgi_lifespan_runs_once_per_instance() -> None:
    from lambda_apps import AsgiEchoApp
    from mangum import Mangum

    app = AsgiEchoApp()
    handler = make_handler(app)
    for _ in range(3):
        status, body = call(handler, "/echo/x")
        assert status == 200
        assert body["state"] == {"started": 1}
    assert (app.startups, app.shutdowns) == (1, 0)
    handler.close()
    assert (app.startups, app.shutdowns) == (1, 1)

    # The trap avoided: Mangum's default runs startup and shutdown around every event.
    trap = AsgiEchoApp()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        mangum = Mangum(trap)
        for _ in range(3):
            mangum(v2_event("/echo/x"), lambda_context())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert (trap.startups, trap.shutdowns) == (3, 3)


def test_loop_bound_client_survives_warm_invocations(postgres: PostgresServer) -> None:
    """An async connection made in lifespan startup serves every later invocation."""
    conninfo = postgres.conninfo()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["conn"] = await psycopg.AsyncConnection.connect(conninfo)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await scope["state"]["conn"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await receive()
        cur = await scope["state"]["conn"].execute("SELECT pg_backend_pid()")
        (pid,) = await cur.fetchone()  # type: ignore[misc]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": json.dumps(pid).encode()})

    handler = make_handler(app)
    try:
        pids = {call(handler, "/")[1]}
        asyncio.run(asyncio.sleep(0))  # another library's asyncio.run resets the loop
        pids.add(call(handler, "/")[1])
        pids.add(call(handler, "/")[1])
    finally:
        handler.close()
    assert len(pids) == 1


def test_import_is_light_and_warning_free() -> None:
    code = (
        "import sys, serverless_pool.aws_lambda\n"
        "bad = [m for m in ('django', 'flask', 'mangum', 'apig_wsgi') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=60)


def test_connect_on_init_survives_a_database_that_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from serverless_pool.testing.postgres import free_port

    pool = ServerlessPool(
        f"host=127.0.0.1 port={free_port()} dbname=shop user=shop password=hunter2-secret",
        connect_timeout=1,
        acquire_timeout=1,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="serverless_pool"):
            make_handler(Flask("down"), connect_on_init=True)
    finally:
        pool.close()
    assert "could not connect ahead of use" in caplog.text
    assert "hunter2-secret" not in caplog.text


class _Context:
    """A context whose runtime reports `millis` left (Managed Instances report zero or
    less once an invocation's time is up; some local tools report no deadline at all)."""

    aws_request_id = "req"
    function_name = "fn"

    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def _borrow_while_another_holds(pool: ServerlessPool, hold: float) -> Flask:
    """An app whose request needs the pool's only connection, held `hold` s by a thread."""
    app = Flask("held")

    @app.route("/")
    def index() -> Any:
        held = pool.acquire()
        threading.Timer(hold, pool.release, args=(held,)).start()
        started = time.monotonic()
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        return jsonify(waited=time.monotonic() - started)

    return app


@pytest.mark.parametrize("millis", [0, -250])
def test_a_non_positive_remaining_time_is_no_deadline(make_pool: MakePool, millis: int) -> None:
    pool = make_pool(max_size=1, acquire_timeout=10)
    handler = make_handler(_borrow_while_another_holds(pool, 0.2))
    status, _headers, body = decode_response(handler(v2_event("/"), _Context(millis)))
    # Taken at its word, the deadline would make the borrow an instant PoolTimeout.
    assert status == 200, body
    assert json.loads(body)["waited"] > 0
    assert pool.stats().get("timeouts", 0) == 0


def test_the_margin_never_takes_all_of_a_short_deadline(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1, acquire_timeout=10)
    handler = make_handler(_borrow_while_another_holds(pool, 0.1), deadline_margin=0.5)
    # 0.4 s left and a 0.5 s margin: half of what is left (0.2 s) is still usable.
    status, _headers, body = decode_response(handler(v2_event("/"), lambda_context(400)))
    assert status == 200, body
    assert pool.stats().get("timeouts", 0) == 0


def test_warmup_reports_the_idle_connections_of_the_pools(make_pool: MakePool) -> None:
    pool = make_pool()
    handler = make_handler(Flask("idle"))
    with pool.connection():
        pass
    answer = handler({"serverless-pool-warmup": True}, lambda_context())
    assert answer["idleConnections"] >= 1  # this pool's idle connection counts
    assert pool.stats()["pool_available"] == 1


def test_base_path_is_removed_from_the_path() -> None:
    from lambda_apps import AsgiEchoApp, flask_echo_app

    for app in (flask_echo_app(), AsgiEchoApp()):
        handler = make_handler(app, base_path="/api")
        try:
            response = handler(load_event("api_gateway_rest_base_path"), lambda_context())
        finally:
            handler.close()
        status, _headers, body = decode_response(response)
        assert status == 200
        echoed = json.loads(body)
        assert echoed["path"] == "/echo/a b"
        if handler.interface == "wsgi":
            assert echoed["prefix"] == "/api"  # Flask builds its URLs under the prefix


def test_interface_is_detected_or_chosen() -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from lambda_apps import AsgiEchoApp, flask_echo_app

    from serverless_pool.aws_lambda.adapters import detect_interface

    assert detect_interface(flask_echo_app()) == "wsgi"
    assert detect_interface(AsgiEchoApp()) == "asgi"
    # Django's handlers, as get_asgi_application()/get_wsgi_application() return them,
    # built without settings: detection looks at the class only.
    assert detect_interface(object.__new__(ASGIHandler)) == "asgi"
    assert detect_interface(object.__new__(WSGIHandler)) == "wsgi"
    assert make_handler(AsgiEchoApp(), interface="asgi").interface == "asgi"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"interface": "rsgi"}, "interface"),
        ({"lifespan": "sometimes"}, "lifespan"),
        ({"deadline_margin": -1}, "deadline_margin"),
        ({"shutdown_timeout": "soon"}, "shutdown_timeout"),
        ({"commands": True}, "commands"),
        ({"commands": "migrate"}, "commands"),
        ({"commands": ["--all"]}, "commands"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], named: str) -> None:
    from lambda_apps import flask_echo_app

    from serverless_pool import SettingsError

    with pytest.raises(SettingsError, match=named):
        make_handler(flask_echo_app(), **options)


def test_not_an_app_is_refused() -> None:
    with pytest.raises(TypeError, match="WSGI or ASGI"):
        make_handler(42)


def test_no_extension_is_registered_outside_lambda() -> None:
    from serverless_pool.aws_lambda.extension import register_extension, registered

    assert register_extension(environ={}) is False
    assert not registered()


@pytest.mark.parametrize(
    ("sent", "named"),
    [
        ([], "without sending a response"),
        (
            [{"type": "http.response.start", "status": 200, "headers": []},
             {"type": "http.response.body", "body": b"part", "more_body": True}],
            "without finishing its response body",
        ),
        (
            [{"type": "http.response.start", "status": 200, "headers": []}],
            "without finishing its response body",
        ),
    ],
    ids=["nothing sent", "body not finished", "no body"],
)  # fmt: skip
def test_an_asgi_app_that_returns_without_a_whole_response_gets_a_500(
    sent: list[dict[str, Any]], named: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for message in sent:
            await send(message)

    handler = make_handler(app, lifespan="off")
    try:
        with caplog.at_level(logging.ERROR, logger="serverless_pool"):
            response = handler(load_event("http_api_v2"), lambda_context())
    finally:
        handler.close()
    assert response["statusCode"] == 500
    assert decode_response(response)[2] == b"Internal Server Error"
    assert any(named in record.getMessage() for record in caplog.records)
