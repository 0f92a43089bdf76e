"""Connections `make_handler` takes back while a Django wrapper still holds them.

At the end of an invocation the handler takes back every connection still on loan
(`ServerlessPool.reclaim()`). Two usual ways to leave one borrowed: a ``request_finished``
receiver that queries after Django's own ``close_old_connections``, and ORM work in a
worker thread, which never gives its connection back. Either way the wrapper that
borrowed it lets go when the pool takes it back, so that its next use borrows anew:
no invocation fails, and no thread ever works in another request's session.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import djtest_views
import pytest
from django.core.signals import request_finished
from django.core.wsgi import get_wsgi_application
from django.db import connection, connections, transaction
from django.test import override_settings
from django_serverless_pool.release import pool_of, release_connections
from django_testkit import APP_NAME, lambda_event

from serverless_pool.aws_lambda import make_handler
from serverless_pool.testing.lambda_emulator import lambda_context
from serverless_pool.testing.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True)

INVOCATIONS = 1_000


def test_a_request_finished_receiver_that_queries_works_on_every_invocation(
    postgres: PostgresServer,
) -> None:
    seen: list[tuple[int, Any]] = []

    def after_the_request(**kwargs: Any) -> None:
        # Registered after Django's close_old_connections, as receivers usually are:
        # this borrows again after the request gave its connection back.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), txid_current_if_assigned()")
            seen.append(cursor.fetchone())

    release_connections()
    handler = make_handler(get_wsgi_application())
    request_finished.connect(after_the_request)
    failures: list[tuple[int, str]] = []
    try:
        for i in range(INVOCATIONS):
            try:
                response = handler(lambda_event("/t/pid"), lambda_context())
            except Exception as err:  # the bug: every second invocation raised
                failures.append((i, f"{type(err).__name__}: {err}"))
                continue
            if response["statusCode"] != 200:
                failures.append((i, response["body"]))
            assert handler.leaked == 1, i  # the receiver's connection, taken back
            assert pool_of("default").stats()["pool_in_use"] == 0, i
    finally:
        request_finished.disconnect(after_the_request)
    assert failures == []
    assert len(seen) == INVOCATIONS
    assert {txid for _, txid in seen} == {None}  # never inside anyone's transaction
    sessions = postgres.backends(application_name=APP_NAME)
    assert 1 <= len(sessions) <= pool_of("default").settings.max_size
    assert all(s.state == "idle" for s in sessions)


@pytest.mark.usefixtures("pools_closed_after")
def test_a_worker_thread_never_works_in_another_requests_transaction(
    postgres: PostgresServer,
) -> None:
    release_connections()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="djtest-worker")
    djtest_views.WORKER = worker
    failures: list[tuple[int, str]] = []
    shared: list[tuple[int, dict[str, Any]]] = []
    try:
        with override_settings(SERVERLESS_POOL={"application_name": APP_NAME, "max_size": 2}):
            handler = make_handler(get_wsgi_application())
            for i in range(INVOCATIONS):
                event = lambda_event("/t/worker-in-transaction", f"marker=m{i}")
                try:
                    response = handler(event, lambda_context())
                except Exception as err:
                    failures.append((i, f"{type(err).__name__}: {err}"))
                    continue
                if response["statusCode"] != 200:
                    failures.append((i, response["body"]))
                    continue
                body = json.loads(response["body"])
                looked = body["worker"]
                # The witnesses, from the server: the worker's session is another one,
                # it is in no transaction, and the request's uncommitted row is not
                # visible to it.
                if looked["pid"] == body["pid"] or looked["txid"] is not None or looked["rows"]:
                    shared.append((i, body))
                assert pool_of("default").stats()["pool_in_use"] == 0, i
            assert len(postgres.backends(application_name=APP_NAME)) <= 2
    finally:
        # The worker thread's own connection, closed in that thread.
        closing = worker.submit(connections.close_all).exception(timeout=60)
        worker.shutdown()
        djtest_views.WORKER = None
    assert failures == []
    assert shared == []
    assert closing is None


def test_commit_or_rollback_between_requests_never_reaches_another_threads_transaction(
    postgres: PostgresServer,
) -> None:
    # Between requests the connection is parked: back in the pool, which may lend it to
    # another thread, while this thread's wrapper still names it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (parked_pid,) = cursor.fetchone()
    release_connections()
    inside, outside = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def another_request() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid(), txid_current()")
                seen["pid"], seen["txid"] = cursor.fetchone()
                inside.set()
                outside.wait(timeout=60)
                cursor.execute("SELECT txid_current_if_assigned()")
                (seen["txid_after"],) = cursor.fetchone()
        finally:
            release_connections()
            connection.close()

    thread = threading.Thread(target=another_request)
    thread.start()
    try:
        assert inside.wait(timeout=60)
        # Django's transaction.commit() and rollback() outside atomic(), in this thread.
        transaction.commit()
        transaction.rollback()
    finally:
        outside.set()
        thread.join(timeout=60)
    assert seen["pid"] == parked_pid  # the other thread did get the parked connection
    assert seen["txid_after"] == seen["txid"]  # and its transaction was left alone
