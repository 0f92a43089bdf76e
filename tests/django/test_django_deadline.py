"""Django's statements carry the invocation's deadline to the server.

Through our ENGINE and ``make_handler(statement_timeout=True)``, for WSGI and ASGI:
Django's default cursors (client-side binding), its ORM, ``atomic()``, and
``server_side_binding``; the witness is ``current_setting('statement_timeout')`` read
by each statement, and a 60 s ``pg_sleep`` the server ends at the deadline.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.db import connection, connections
from django_serverless_pool.release import release_connections
from django_testkit import APP_NAME, lambda_event
from psycopg import pq

from serverless_pool import bound_statements_by_deadline, deadline_after
from serverless_pool.aws_lambda import LambdaHandler, make_handler
from serverless_pool.testing.lambda_emulator import lambda_context
from serverless_pool.testing.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True)

BOUND = "SELECT current_setting('statement_timeout')"


@pytest.fixture(params=["wsgi", "asgi"])
def make_django_handler(request: pytest.FixtureRequest) -> Iterator[Callable[..., LambdaHandler]]:
    handlers: list[LambdaHandler] = []

    def make(**options: Any) -> LambdaHandler:
        release_connections()
        app = get_asgi_application() if request.param == "asgi" else get_wsgi_application()
        handler = make_handler(app, **options)
        assert handler.interface == request.param
        handlers.append(handler)
        return handler

    yield make
    for handler in handlers:
        handler.close()


def _get(handler: LambdaHandler, path: str, remaining_ms: int, query: str = "") -> Any:
    response = handler(lambda_event(path, query), lambda_context(remaining_ms))
    assert response["statusCode"] == 200, response
    return json.loads(response["body"])


def ms(value: str) -> int:
    assert value.endswith("ms"), value
    return int(value[:-2])


def test_every_statement_of_a_django_request_carries_the_time_left(
    make_django_handler: Callable[..., LambdaHandler],
) -> None:
    handler = make_django_handler(statement_timeout=True, deadline_margin=0.5)
    seen = _get(handler, "/t/deadline-bounds", remaining_ms=5000)
    for kind in ("cursor", "cursor_with_params", "orm", "atomic"):
        # 5 s left less the 0.5 s margin: what the server applied, in ms.
        assert 2500 < ms(seen[kind]) <= 4500, (kind, seen)
    assert seen["session"] == "0"  # nothing outlived its statement
    assert seen["logged"] == BOUND + " || ''"  # Django logs the app's SQL only


def test_without_the_option_django_statements_are_unchanged(
    make_django_handler: Callable[..., LambdaHandler],
) -> None:
    handler = make_django_handler(deadline_margin=0.5)
    seen = _get(handler, "/t/deadline-bounds", remaining_ms=5000)
    assert {seen[k] for k in ("cursor", "cursor_with_params", "orm", "atomic", "session")} == {"0"}


@pytest.mark.parametrize("query", ["", "atomic=1"], ids=["autocommit", "atomic"])
def test_the_server_ends_a_django_statement_at_the_deadline(
    make_django_handler: Callable[..., LambdaHandler], postgres: PostgresServer, query: str
) -> None:
    handler = make_django_handler(statement_timeout=True, deadline_margin=0.5)
    started = time.monotonic()
    seen = _get(handler, "/t/deadline-sleep", remaining_ms=2000, query=query)
    took = time.monotonic() - started
    assert seen["sqlstate"] == "57014"  # the server's statement_timeout, not the client
    assert 1.0 < seen["took"] < 5.0  # at the deadline (1.5 s), not after 60 s
    assert took < 10
    sessions = postgres.backends(application_name=APP_NAME)
    assert all(s.state == "idle" for s in sessions)  # nothing runs on


@pytest.fixture
def server_side_binding() -> Iterator[Any]:
    wrapper = connections["default"].copy()
    wrapper.settings_dict = copy.deepcopy(wrapper.settings_dict)
    wrapper.settings_dict["OPTIONS"]["server_side_binding"] = True
    yield wrapper
    wrapper.close()


def test_server_side_binding_statements_are_bounded_in_the_same_round_trip(
    server_side_binding: Any,
) -> None:
    def read() -> str:
        with server_side_binding.cursor() as cursor:
            cursor.execute(BOUND + " || %s", [""])
            return str(cursor.fetchone()[0])

    assert read() == "0"
    pgconn = server_side_binding.connection.pgconn
    traces: list[str] = []
    for bounded in (False, True):
        with tempfile.TemporaryFile("w+") as file:
            pgconn.trace(file.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            with deadline_after(5), bound_statements_by_deadline(bounded):
                value = read()
            pgconn.untrace()
            file.seek(0)
            traces.append(file.read())
        assert (value == "0") is not bounded
        if bounded:
            assert 3000 < ms(value) <= 5000
    without, with_bound = (t.count("\tReadyForQuery\t") for t in traces)
    assert with_bound == without == 1
    assert "set_config('statement_timeout'" in traces[1]


def test_a_django_connection_outside_the_bound_shows_no_trace_of_it() -> None:
    with deadline_after(5), bound_statements_by_deadline(), connection.cursor() as cursor:
        cursor.execute(BOUND)
        assert ms(cursor.fetchone()[0]) > 3000
    with connection.cursor() as cursor:
        cursor.execute(BOUND)
        assert cursor.fetchone()[0] == "0"
