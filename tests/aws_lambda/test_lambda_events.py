"""Every event source round-trips through `make_handler`, for a WSGI and an ASGI app.

The events are the JSON files in ``events/``, written from the AWS documentation of
each payload format; the apps echo what they received.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from lambda_apps import BINARY, AsgiEchoApp, flask_echo_app
from lambda_testkit import decode_response, load_event, make_context

from serverless_pool.aws_lambda import make_handler

SENT_BODY = bytes([0, 1, 2, 255, 254, 10, 13]) + "é€".encode()

# source: (values of ?x=, whether repeated headers/cookies keep every value)
SOURCES: dict[str, tuple[list[str], bool]] = {
    "api_gateway_rest_v1": (["1", "2"], True),
    "http_api_v1": (["1", "2"], True),
    "http_api_v2": (["1", "2"], True),
    "function_url": (["1", "2"], True),
    "alb_multi_value": (["1", "2"], True),
    # Without multi-value headers, ALB passes only the last value of each.
    "alb": (["2"], False),
}

APPS: dict[str, Callable[[], Any]] = {"wsgi": flask_echo_app, "asgi": AsgiEchoApp}


@pytest.fixture(params=sorted(APPS))
def app_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_request_round_trips(app_kind: str, source: str) -> None:
    handler = make_handler(APPS[app_kind]())
    assert handler.interface == app_kind
    try:
        response = handler(load_event(source), make_context())
    finally:
        handler.close()
    status, headers, body = decode_response(response)
    assert status == 200, body
    echoed = json.loads(body)
    expected_x, multi = SOURCES[source]
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/a b"
    assert echoed["args"] == {"x": expected_x, "y": ["z w"]}
    assert [v.strip() for v in echoed["multi"].split(",")] == (["one", "two"] if multi else ["two"])
    assert echoed["cookies"] == {"a": "1", "b": "2"}
    assert base64.b64decode(echoed["body"]) == SENT_BODY
    cookies = sorted(v.split(";")[0] for k, v in headers if k == "set-cookie")
    assert cookies == (["s1=v1", "s2=v2"] if multi else cookies)
    assert cookies, "at least one Set-Cookie survives every source"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_binary_response_is_base64_encoded(app_kind: str, source: str) -> None:
    event = load_event(source)
    for key in ("path", "rawPath"):
        if key in event:
            event[key] = "/binary"
    event["body"], event["isBase64Encoded"] = "", False
    event.pop("queryStringParameters", None)
    event.pop("multiValueQueryStringParameters", None)
    event["rawQueryString"] = ""
    event["httpMethod"] = "GET"
    if "http" in event.get("requestContext", {}):
        event["requestContext"]["http"].update(method="GET", path="/binary")
    handler = make_handler(APPS[app_kind]())
    try:
        response = handler(event, make_context())
    finally:
        handler.close()
    assert response["isBase64Encoded"] is True
    status, _headers, body = decode_response(response)
    assert (status, body) == (200, BINARY)


def test_base_path_is_removed_from_the_path(app_kind: str) -> None:
    handler = make_handler(APPS[app_kind](), base_path="/api")
    try:
        response = handler(load_event("api_gateway_rest_base_path"), make_context())
    finally:
        handler.close()
    status, _headers, body = decode_response(response)
    assert status == 200
    echoed = json.loads(body)
    assert echoed["path"] == "/echo/a b"
    if app_kind == "wsgi":
        # Flask builds its URLs under the prefix again.
        assert echoed["prefix"] == "/api"


def test_interface_is_detected_or_chosen() -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

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
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], named: str) -> None:
    from serverless_pool import SettingsError

    with pytest.raises(SettingsError, match=named):
        make_handler(flask_echo_app(), **options)


def test_not_an_app_is_refused() -> None:
    with pytest.raises(TypeError, match="WSGI or ASGI"):
        make_handler(42)
