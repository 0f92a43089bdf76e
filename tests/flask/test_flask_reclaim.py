"""Connections `make_handler` takes back while an app context still holds them.

An app context that outlives the request (here: one a worker thread pushes once and
keeps, as a ``ThreadPoolExecutor`` initializer does) keeps its connection in its ``g``;
at the end of each invocation the handler takes that connection back. The context then
lets go of it, so that its next use borrows anew, and the worker never works in the
session the pool lends to the next request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, jsonify
from flask_serverless_pool import ServerlessPool

from serverless_pool.aws_lambda import make_handler
from serverless_pool.testing.lambda_emulator import http_api_event, lambda_context
from serverless_pool.testing.postgres import PostgresServer

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]

INVOCATIONS = 1_000


def test_a_worker_threads_app_context_never_works_in_another_requests_transaction(
    make_app: MakeApp, postgres: PostgresServer, app_name: str
) -> None:
    app, db = make_app(SERVERLESS_POOL_MAX_SIZE=2)

    def keep_an_app_context() -> None:
        app.app_context().push()  # never popped: its g outlives every request

    worker = ThreadPoolExecutor(max_workers=1, initializer=keep_an_app_context)

    def worker_looks() -> dict[str, Any]:
        with db.connection() as conn:
            pid, txid = conn.execute(
                "SELECT pg_backend_pid(), txid_current_if_assigned()"
            ).fetchone()  # type: ignore[misc]
        return {"pid": pid, "txid": txid}

    @app.route("/in-transaction")
    def in_transaction() -> Any:
        with db.transaction() as conn:
            pid, txid = conn.execute("SELECT pg_backend_pid(), txid_current()").fetchone()  # type: ignore[misc]
            looked = worker.submit(worker_looks).result(timeout=60)
        return jsonify(pid=pid, txid=txid, worker=looked)

    handler = make_handler(app)
    failures: list[tuple[int, str]] = []
    shared: list[tuple[int, dict[str, Any]]] = []
    try:
        for i in range(INVOCATIONS):
            try:
                response = handler(http_api_event("GET", "/in-transaction"), lambda_context())
            except Exception as err:
                failures.append((i, f"{type(err).__name__}: {err}"))
                continue
            if response["statusCode"] != 200:
                failures.append((i, response["body"]))
                continue
            body = json.loads(response["body"])
            # The witnesses, from the server: another session, in no transaction.
            if body["worker"]["pid"] == body["pid"] or body["worker"]["txid"] is not None:
                shared.append((i, body))
            assert db.get_pool(app).stats()["pool_in_use"] == 0, i
        assert len(postgres.backends(application_name=app_name)) <= 2
    finally:
        worker.shutdown()
    assert failures == []
    assert shared == []


def test_an_app_context_pushed_at_import_lets_go_at_the_end_of_each_invocation(
    make_app: MakeApp, postgres: PostgresServer, app_name: str
) -> None:
    # Requests reuse an app context already pushed for the same app, so its teardown
    # never runs: only the end of the invocation takes the connection back.
    app, db = make_app(SERVERLESS_POOL_MAX_SIZE=1)
    pool = db.get_pool(app)

    @app.route("/pid")
    def pid() -> Any:
        with db.connection() as conn:
            return jsonify(pid=conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]

    handler = make_handler(app)
    context = app.app_context()
    context.push()
    failures: list[tuple[int, str]] = []
    try:
        for i in range(INVOCATIONS):
            response = handler(http_api_event("GET", "/pid"), lambda_context())
            if response["statusCode"] != 200:
                failures.append((i, response["body"]))
            assert handler.leaked == 1, i
            assert pool.stats()["pool_in_use"] == 0, i
            # What the pool lends now is not held by the context any more: a borrower
            # outside it gets it alone.
            with pool.connection() as conn:
                conn.execute("SELECT 1")
    finally:
        context.pop()
    assert failures == []
    (backend,) = postgres.backends(application_name=app_name)
    assert backend.state == "idle"
