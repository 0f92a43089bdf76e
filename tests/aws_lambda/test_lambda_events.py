"""Every event gets a clear answer, for a Flask app, a bare ASGI app, and Django over
WSGI and over ASGI (those two in the emulator, through the real `awslambdaric`).

Supported sources round-trip method, path, repeated query keys, repeated headers, two
cookies each way, and text and binary bodies; anything else is refused with an
`UnsupportedEvent` naming what it is, before the app runs. The fixtures in ``events/``
were written from the AWS documentation of each payload and from the captures AWS's
own projects publish (Powertools for AWS Lambda's test events). Every app borrows a
pooled connection per request, and no invocation may leave one borrowed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lambda_apps import BINARY, AsgiEchoApp, flask_echo_app
from lambda_testkit import EVENTS, FUNCTIONS, decode_response, load_event

from serverless_pool import ServerlessPool
from serverless_pool.aws_lambda import UnsupportedEvent, classify, make_handler
from serverless_pool.testing.lambda_emulator import EmulatedFunction, lambda_context
from serverless_pool.testing.postgres import PostgresServer

BINARY_BODY = bytes([0, 1, 2, 255, 254, 10, 13]) + "é€".encode()
TEXT_BODY = "plain text, accents: é ü €"

# source: (values of ?x=, whether repeated headers keep every value, both Set-Cookie back)
SOURCES: dict[str, tuple[list[str], bool, bool]] = {
    "api_gateway_rest_v1": (["1", "2"], True, True),
    # A REST event without the multiValue* keys (test tools, mapping templates): one
    # value per key in, but both cookies still come back.
    "api_gateway_rest_v1_single_value": (["2"], False, True),
    "http_api_v1": (["1", "2"], True, True),
    "http_api_v2": (["1", "2"], True, True),
    "function_url": (["1", "2"], True, True),
    "alb_multi_value": (["1", "2"], True, True),
    # Without multi-value headers, ALB passes only the last value of each, and takes
    # one Set-Cookie back.
    "alb": (["2"], False, False),
}
KINDS = {
    "api_gateway_rest_v1": "rest-v1",
    "api_gateway_rest_v1_single_value": "rest-v1",
    "http_api_v1": "http-v1",
    "http_api_v2": "http-v2",
    "function_url": "function-url",
    "alb_multi_value": "alb-multi-value",
    "alb": "alb",
}
UNSUPPORTED: dict[str, str] = {
    "websocket_connect": "API Gateway WebSocket event (CONNECT)",
    "websocket_message": "API Gateway WebSocket event (MESSAGE)",
    "sqs": "an SQS message batch",
    "sns": "an SNS notification",
    "s3": "an S3 notification",
    "dynamodb_stream": "a DynamoDB stream batch",
    "kinesis": "a Kinesis stream batch",
    "cloudfront_edge": "a CloudFront Lambda@Edge event",
    "vpc_lattice_v1": "a VPC Lattice event (version 1.0)",
    "vpc_lattice_v2": "a VPC Lattice event (version 2.0)",
    "authorizer_token": "Lambda authorizer event (type 'TOKEN')",
    "authorizer_request_v1": "Lambda authorizer event (type 'REQUEST')",
    "authorizer_request_v2": "Lambda authorizer event (type 'REQUEST')",
    "eventbridge_custom": "an EventBridge event (detail-type 'Order Paid')",
    "cloudformation_custom_resource": "a CloudFormation custom resource event",
    "cognito_trigger": "a Cognito trigger ('PreSignUp_SignUp')",
}
SUPPORTED_PHRASE = "it serves HTTP requests from API Gateway REST APIs"


def source_event(source: str) -> dict[str, Any]:
    if source == "api_gateway_rest_v1_single_value":
        event = load_event("api_gateway_rest_v1")
        del event["multiValueHeaders"], event["multiValueQueryStringParameters"]
        return event
    return load_event(source)


def with_text_body(event: dict[str, Any]) -> dict[str, Any]:
    event["body"], event["isBase64Encoded"] = TEXT_BODY, False
    for key in ("headers", "multiValueHeaders"):
        for name in list(event.get(key) or {}):
            if name.lower() == "content-type":
                value = "text/plain; charset=utf-8"
                event[key][name] = [value] if key == "multiValueHeaders" else value
    return event


def unsupported_events() -> dict[str, tuple[object, str]]:
    cases: dict[str, tuple[object, str]] = {
        name: (json.loads((EVENTS / "unsupported" / f"{name}.json").read_text()), what)
        for name, what in UNSUPPORTED.items()
    }
    bad_base64 = load_event("api_gateway_rest_v1")
    bad_base64["body"] = "this is not base64!"
    no_http = load_event("http_api_v2")
    del no_http["requestContext"]["http"]
    no_path = load_event("alb")
    del no_path["path"]
    cases.update(
        {
            "none": (None, "cannot serve None"),
            "string": ("GET / HTTP/1.1", "cannot serve a str"),
            "list": ([1, 2], "cannot serve a list"),
            "number": (42, "cannot serve an int"),
            "empty": ({}, "a payload with keys [] (empty)"),
            "unknown": ({"order": 42, "paid": True}, "a payload with keys [order, paid]"),
            "bad_base64": (bad_base64, "is not valid base64"),
            "v2_without_http": (no_http, "it has no requestContext.http"),
            "alb_without_path": (no_path, "Application Load Balancer event is malformed: path"),
        }
    )
    return cases


UNSUPPORTED_CASES = unsupported_events()


# -- apps: two in this process, Django over WSGI and ASGI in the emulator ---------------


class InProcess:
    """A Flask or bare ASGI app borrowing from `pool`, behind `make_handler`."""

    def __init__(self, kind: str, pool: ServerlessPool) -> None:
        self.kind = kind
        self.pool = pool
        self.app: Any = flask_echo_app(pool) if kind == "flask" else AsgiEchoApp(pool)
        self.handler = make_handler(self.app)

    def calls(self) -> int:
        return int(self.app.config["calls"] if self.kind == "flask" else self.app.calls)

    def invoke(self, event: object) -> Any:
        try:
            return self.handler(event, lambda_context())  # type: ignore[arg-type]
        finally:
            assert self.pool.stats()["pool_in_use"] == 0
            assert self.handler.leaked == 0  # nothing had to be taken back

    def close(self) -> None:
        self.handler.close()


class InEmulator:
    """Django's echo site on the emulator; leaks show in its EMF metric lines."""

    def __init__(self, kind: str, function: EmulatedFunction) -> None:
        self.kind = kind
        self.function = function

    def invoke(self, event: object) -> Any:
        result = self.function.invoke(event)
        instance = next(i for i in self.function.instances if i.name == result.instance)
        if result.status == "error":
            if result.payload.get("errorType") == "UnsupportedEvent":
                raise UnsupportedEvent(result.payload["errorMessage"])
            raise AssertionError(result.payload)
        assert result.ok, result.payload
        # The metric line is printed before the response is posted, but the emulator
        # reads the instance's output on a thread of its own: wait for it, briefly.
        waited_until = time.monotonic() + 10
        while True:
            emf = [
                json.loads(line)
                for line in instance.output().splitlines()
                if line.startswith('{"_aws"') and result.request_id in line
            ]
            if emf or time.monotonic() > waited_until:
                break
            time.sleep(0.01)
        assert [line["LeakedConnections"] for line in emf] == [0]
        return result.payload


def _django(postgres: PostgresServer, handler: str) -> Iterator[EmulatedFunction]:
    env = {
        "DATABASE_URL": postgres.url(),
        "SERVERLESS_POOL_APPLICATION_NAME": f"lambda-{handler.replace('_', '-')}",
    }
    with EmulatedFunction(
        f"django_echo_function.{handler}", cwd=FUNCTIONS, env=env, freeze_idle=False
    ) as function:
        yield function


@pytest.fixture(scope="module")
def django_wsgi(postgres: PostgresServer) -> Iterator[EmulatedFunction]:
    yield from _django(postgres, "wsgi_handler")


@pytest.fixture(scope="module")
def django_asgi(postgres: PostgresServer) -> Iterator[EmulatedFunction]:
    yield from _django(postgres, "asgi_handler")


@pytest.fixture(params=["flask", "asgi", "django-wsgi", "django-asgi"])
def app(request: pytest.FixtureRequest, make_pool: Callable[..., ServerlessPool]) -> Iterator[Any]:
    kind = str(request.param)
    if kind.startswith("django"):
        function = request.getfixturevalue(kind.replace("-", "_"))
        yield InEmulator(kind, function)
        return
    target = InProcess(kind, make_pool())
    try:
        yield target
    finally:
        target.close()


# -- supported sources -------------------------------------------------------------------


@pytest.mark.parametrize("body", ["binary", "text"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_request_round_trips(app: Any, source: str, body: str) -> None:
    event = source_event(source)
    if body == "text":
        event = with_text_body(event)
    assert classify(event) == KINDS[source]
    status, headers, raw = decode_response(app.invoke(event))
    assert status == 200, raw
    echoed = json.loads(raw)
    expected_x, multi, both_cookies = SOURCES[source]
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/a b"
    assert echoed["args"] == {"x": expected_x, "y": ["z w"]}
    assert [v.strip() for v in echoed["multi"].split(",")] == (["one", "two"] if multi else ["two"])
    assert echoed["cookies"] == {"a": "1", "b": "2"}
    sent = TEXT_BODY.encode() if body == "text" else BINARY_BODY
    assert base64.b64decode(echoed["body"]) == sent
    cookies = sorted(v.split(";")[0].strip() for k, v in headers if k == "set-cookie")
    if both_cookies:
        assert cookies == ["s1=v1", "s2=v2"]
    else:  # which one survives differs between apig-wsgi and Mangum
        assert len(cookies) == 1
        assert cookies[0] in ("s1=v1", "s2=v2")


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_binary_response_is_base64_encoded(app: Any, source: str) -> None:
    event = source_event(source)
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
    response = app.invoke(event)
    assert response["isBase64Encoded"] is True
    status, _headers, raw = decode_response(response)
    assert (status, raw) == (200, BINARY)


# -- everything else -----------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(UNSUPPORTED_CASES))
def test_anything_else_gets_a_clear_error_before_the_app_runs(app: Any, case: str) -> None:
    event, named = UNSUPPORTED_CASES[case]
    calls = app.calls() if isinstance(app, InProcess) else None
    with pytest.raises(UnsupportedEvent) as raised:
        app.invoke(event)
    message = str(raised.value)
    assert named in message
    if "malformed" not in message:
        assert SUPPORTED_PHRASE in message
    assert "not base64!" not in message  # values never appear, only names and sizes
    if isinstance(app, InProcess):
        assert app.calls() == calls


def test_classify_names_every_supported_source() -> None:
    for source, kind in KINDS.items():
        assert classify(source_event(source)) == kind
    assert classify(load_event("api_gateway_rest_base_path")) == "rest-v1"
