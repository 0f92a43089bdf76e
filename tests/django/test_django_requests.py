"""Requests through the full Django stack (WSGI), on the pooled ENGINE and middleware."""

from __future__ import annotations

import threading
from typing import Any
from unittest import mock
from wsgiref.util import setup_testing_defaults

import djtest_views
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_serverless_pool.release import pool_of, release_connections
from django_testkit import APP_NAME
from shop.models import Order, Product

from serverless_pool.testing.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture(autouse=True)
def _start_without_a_connection() -> None:
    # The test database fixtures may leave this thread holding one.
    release_connections()


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def in_use() -> int:
    return pool_of("default").stats()["pool_in_use"]


def idle_in_transaction(postgres: PostgresServer) -> list[object]:
    return [
        b
        for b in postgres.backends()
        if b.application_name.startswith(APP_NAME) and b.state != "idle"
    ]


def test_each_request_borrows_and_returns_one_connection(client: Client) -> None:
    before = pool_of("default").stats()
    for _ in range(5):
        assert client.get("/t/one").status_code == 200
        assert not connection.borrowing
        assert in_use() == 0
    after = pool_of("default").stats()
    assert after["borrows"] - before["borrows"] == 5
    assert after["connections_opened"] - before["connections_opened"] <= 1


def test_the_example_shop_api_lists_creates_reads_updates_and_deletes(client: Client) -> None:
    created = client.post(
        "/products", {"name": "lamp", "price_cents": 1500, "stock": 3}, "application/json"
    )
    assert created.status_code == 201
    pk = created.json()["id"]
    assert client.get(f"/products/{pk}").json()["name"] == "lamp"
    assert client.get("/products").json()["products"][0]["id"] == pk
    patched = client.patch(f"/products/{pk}", {"stock": 7}, "application/json")
    assert patched.json()["stock"] == 7
    duplicate = client.post("/products", {"name": "lamp", "price_cents": 1}, "application/json")
    assert duplicate.status_code == 409
    assert client.post("/products", {"name": "x"}, "application/json").status_code == 400
    assert client.delete(f"/products/{pk}").status_code == 204
    assert client.get(f"/products/{pk}").status_code == 404
    assert in_use() == 0


def test_an_order_updates_two_tables_in_one_transaction(client: Client) -> None:
    product = Product.objects.create(name="chair", price_cents=200, stock=2)
    with CaptureQueriesContext(connection) as queries:
        placed = client.post("/orders", {"product": product.pk, "quantity": 2}, "application/json")
    assert placed.status_code == 201
    assert placed.json()["total_cents"] == 400
    assert any("FOR UPDATE" in q["sql"] for q in queries.captured_queries)
    refused = client.post("/orders", {"product": product.pk, "quantity": 1}, "application/json")
    assert refused.status_code == 409
    assert in_use() == 0
    product.refresh_from_db()
    assert product.stock == 0
    assert Order.objects.count() == 1


def test_a_view_that_raises_returns_its_connection(
    client: Client, postgres: PostgresServer
) -> None:
    response = client.get("/t/raises", {"name": "kept"})
    assert response.status_code == 500
    assert in_use() == 0
    assert not connection.borrowing
    assert Product.objects.filter(name="kept").exists()  # autocommit: the insert stayed
    assert idle_in_transaction(postgres) == []


def test_an_atomic_block_left_by_an_exception_rolls_back(
    client: Client, postgres: PostgresServer
) -> None:
    response = client.get("/t/atomic-raises", {"name": "gone"})
    assert response.json() == {"count": 0}
    assert in_use() == 0
    assert not Product.objects.filter(name="gone").exists()
    assert idle_in_transaction(postgres) == []


def test_atomic_requests_rolls_back_a_failed_request(
    client: Client, monkeypatch: pytest.MonkeyPatch, postgres: PostgresServer
) -> None:
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    assert client.get("/t/order-then-fail", {"name": "ghost"}).status_code == 500
    assert in_use() == 0
    assert idle_in_transaction(postgres) == []
    assert not Product.objects.filter(name="ghost").exists()
    assert Order.objects.count() == 0
    ok = client.post("/products", {"name": "real", "price_cents": 1}, "application/json")
    assert ok.status_code == 201
    assert Product.objects.filter(name="real").exists()


def test_on_commit_runs_after_commit_and_not_after_rollback(client: Client) -> None:
    djtest_views.COMMITTED.clear()
    assert client.post("/t/on-commit?name=yes").status_code == 200
    assert client.post("/t/on-commit?name=no&fail=1").status_code == 500
    assert djtest_views.COMMITTED == ["yes"]
    assert list(Product.objects.values_list("name", flat=True)) == ["yes"]


def test_savepoints_roll_back_only_the_inner_block(client: Client) -> None:
    assert client.get("/t/savepoints").json() == {"names": ["outer", "after"]}


def test_server_side_cursors_work_and_leave_no_cursor_behind(client: Client) -> None:
    Product.objects.bulk_create(Product(name=f"p{i}", price_cents=1) for i in range(5))
    release_connections()
    assert client.get("/t/iterate").json() == {"names": [f"p{i}" for i in range(5)]}
    assert in_use() == 0
    with connection.cursor() as cursor:  # the same server session, borrowed again
        cursor.execute("SELECT count(*) FROM pg_cursors")
        assert cursor.fetchone() == (0,)


def test_the_time_zone_is_a_startup_parameter_that_survives_every_reset(
    client: Client,
) -> None:
    client.get("/t/one")
    before = pool_of("default").stats()
    for _ in range(10):
        body = client.get("/t/pid").json()
        assert body["timezone"] == "UTC"
    after = pool_of("default").stats()
    # Django's SET TIME ZONE went into the startup packet instead: DISCARD ALL keeps it.
    assert after["resets"] - before["resets"] == 10
    assert after["borrows"] - before["borrows"] == 10


def test_debug_records_queries(client: Client, settings: object) -> None:
    settings.DEBUG = True  # type: ignore[attr-defined]
    client.get("/t/one")
    assert any(q["sql"] == "SELECT 1" for q in connection.queries)


def test_a_backend_ended_between_requests_fails_no_request(
    client: Client, postgres: PostgresServer
) -> None:
    failures, pids = 0, set()
    for _ in range(40):
        response = client.get("/t/pid")
        if response.status_code != 200:
            failures += 1
        else:
            pids.add(response.json()["pid"])
        ended = postgres.terminate_backends(application_name=APP_NAME)
        assert ended >= 1
    assert failures == 0
    assert len(pids) == 40  # every request got a fresh session, none failed


def test_a_streaming_response_holds_its_connection_until_closed() -> None:
    handler = WSGIHandler()
    statuses: list[str] = []
    environ = _environ("/t/stream")
    body = handler(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    assert b"".join(body) == b"012"
    assert in_use() == 1  # still streaming until the server closes the response
    body.close()
    assert in_use() == 0


def test_a_client_abort_during_streaming_returns_the_connection() -> None:
    handler = WSGIHandler()
    body = handler(_environ("/t/stream"), lambda status, headers: None)
    iterator = iter(body)
    assert next(iterator) == b"0"
    body.close()  # the client went away; the WSGI server closes the response
    assert in_use() == 0
    assert not connection.borrowing


def test_two_aliases_use_two_pools_with_their_own_settings(client: Client) -> None:
    pids = client.get("/t/two-databases", {"name": "elsewhere"}).json()
    assert not connections["other"].borrowing
    assert pids["default"] != pids["other"]
    assert pool_of("other").settings.max_size == 2
    assert pool_of("default").settings.max_size == 4
    assert pool_of("other").stats()["pool_in_use"] == 0
    assert Product.objects.using("other").filter(name="elsewhere").exists()
    assert not Product.objects.filter(name="elsewhere").exists()


def test_no_session_is_left_idle_in_transaction(client: Client, postgres: PostgresServer) -> None:
    for path in ("/t/raises?name=a", "/t/atomic-raises?name=b", "/t/savepoints", "/t/one"):
        client.get(path)
    assert idle_in_transaction(postgres) == []
    states = {b.state for b in postgres.backends() if b.application_name == APP_NAME}
    assert states <= {"idle"}


def _environ(path: str) -> dict[str, object]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)  # the standard library's minimal WSGI environ
    return environ


def test_between_requests_the_session_is_parked_and_django_setup_is_skipped(
    client: Client,
) -> None:
    from django_serverless_pool.backends.postgresql.base import DatabaseWrapper

    with mock.patch.object(
        DatabaseWrapper, "init_connection_state", autospec=True,
        side_effect=DatabaseWrapper.init_connection_state,
    ) as setups:  # fmt: skip
        pids = {client.get("/t/pid").json()["pid"] for _ in range(5)}
    assert len(pids) == 1
    assert setups.call_count <= 1  # set up once, like a persistent connection
    assert in_use() == 0  # but it is back in the pool between requests
    assert not connection.borrowing
    assert pool_of("default").stats()["resets"] >= 5  # and reset after every request


def test_connection_created_receivers_set_up_every_borrowed_session(client: Client) -> None:
    """The reset on return undoes what they did: so they run for every request."""
    created: list[object] = []

    def set_timeout(sender: object, connection: Any, **kwargs: object) -> None:
        if connection.alias == "default":
            created.append(connection)
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = '12345ms'")

    connection_created.connect(set_timeout)
    try:
        for _ in range(3):
            body = client.get("/t/setting", {"name": "statement_timeout"}).json()
            assert body == {"value": "12345ms"}
    finally:
        connection_created.disconnect(set_timeout)
    assert len(created) == 3
    # Without the receiver the next session shows nothing of what it did.
    assert client.get("/t/setting", {"name": "statement_timeout"}).json() == {"value": "0"}


def test_a_parked_session_taken_by_another_thread_is_not_shared(client: Client) -> None:
    first = client.get("/t/pid").json()["pid"]  # parked in this thread
    taken = threading.Event()
    done = threading.Event()
    seen: list[int] = []

    def other_thread() -> None:
        with connections["default"].cursor() as cursor:  # this thread's own wrapper
            cursor.execute("SELECT pg_backend_pid()")
            seen.append(cursor.fetchone()[0])
        taken.set()
        done.wait(10)
        release_connections()
        connections["default"].close()

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert taken.wait(10)
        assert seen == [first]  # the pool lent the parked session to the other thread
        second = client.get("/t/pid").json()["pid"]
        assert second != first  # so this thread got another one, through Django's connect()
    finally:
        done.set()
        thread.join(10)
    assert in_use() == 0


def test_changing_the_time_zone_between_requests_reaches_the_next_request(
    client: Client,
) -> None:
    assert client.get("/t/pid").json()["timezone"] == "UTC"  # parked now
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
        assert client.get("/t/pid").json()["timezone"] == "Asia/Tokyo"
    assert client.get("/t/pid").json()["timezone"] == "UTC"
    assert in_use() == 0
