"""What kind of event an invocation carries, decided before any adapter sees it.

`make_handler` serves HTTP requests from five sources. Anything else handed to
apig-wsgi or Mangum fails deep inside them (``KeyError: 'path'``, ``KeyError: 'http'``,
a ``TypeError``, ``binascii.Error``) or, worse, is served as a request it is not (an
API Gateway authorizer event looks like one). `classify()` recognises each supported
shape from the fields AWS documents for it, and raises `UnsupportedEvent` for anything
else, naming what it received (the kind, or the keys; never values, which may hold
secrets) and what is supported.

The shapes, from the AWS documentation of each source:

- API Gateway REST API, proxy integration: ``httpMethod``, ``path``, ``requestContext``
  with ``resourcePath``/``stage``, no ``version`` (or ``"1.0"`` for HTTP APIs'
  payload 1.0, which is the same format).
- HTTP API, payload 2.0: ``version: "2.0"``, ``rawPath``, ``requestContext.http``.
- Lambda Function URL: the 2.0 format, with a ``.lambda-url.`` domain name.
- Application Load Balancer: ``requestContext.elb``; multi-value if the target group
  has multi-value headers on (``multiValueHeaders`` in the event).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, Final, Literal

from ..errors import UnsupportedEvent

__all__ = ["HTTP_KINDS", "EventKind", "check_body", "classify", "describe"]

EventKind = Literal["rest-v1", "http-v1", "http-v2", "function-url", "alb", "alb-multi-value"]

#: Human names of the supported sources, in the order they are listed in errors.
HTTP_KINDS: Final[dict[str, str]] = {
    "rest-v1": "API Gateway REST API (proxy integration)",
    "http-v1": "HTTP API payload 1.0",
    "http-v2": "HTTP API payload 2.0",
    "function-url": "Lambda Function URL",
    "alb": "Application Load Balancer",
    "alb-multi-value": "Application Load Balancer (multi-value headers)",
}

SUPPORTED: Final = (
    "API Gateway REST APIs (proxy integration), HTTP APIs (payloads 1.0 and 2.0), Lambda"
    " Function URLs and Application Load Balancers"
)

_RECORD_SOURCES: Final = {
    "aws:sqs": "an SQS message batch",
    "aws:sns": "an SNS notification",
    "aws:s3": "an S3 notification",
    "aws:dynamodb": "a DynamoDB stream batch",
    "aws:kinesis": "a Kinesis stream batch",
    "aws:kafka": "an Amazon MSK batch",
    "SelfManagedKafka": "a Kafka batch",
    "aws:ses": "an SES notification",
    "aws:codecommit": "a CodeCommit trigger",
}


def classify(event: object) -> EventKind:
    """The HTTP source of `event`, or `UnsupportedEvent` naming what it is instead."""
    # type() first: events arrive as dicts, and an ABC's isinstance() costs far more; this
    # runs before every invocation.
    if type(event) is dict:
        # The common case first, in as few steps as decide it: an HTTP API 2.0 request
        # (or a Function URL's). Of the other shapes AWS sends, only an HTTP API's
        # authorizer has both version 2.0 and a requestContext.http (WebSocket, VPC
        # Lattice and ALB events have none), and it has a "type", which no request has:
        # any event with one takes the full path below.
        context = event.get("requestContext")
        if (
            type(context) is dict
            and type(context.get("http")) is dict
            and event.get("version") == "2.0"
            and "type" not in event
            and type(event.get("rawPath")) is str
            and type(event.get("body", "")) is str
        ):
            return _v2_kind(context)
    elif not isinstance(event, Mapping):
        raise UnsupportedEvent(f"make_handler cannot serve {_article(event)}: {_supported()}")
    context = event.get("requestContext")
    if event.get("type") in _AUTHORIZER_TYPES and ("methodArn" in event or "routeArn" in event):
        raise _unsupported(
            f"an API Gateway Lambda authorizer event (type {event.get('type')!r})",
            "an authorizer needs a handler of its own that returns a policy",
        )
    if type(context) is dict or isinstance(context, Mapping):
        if "elb" in context and _is_mapping(context["elb"]):
            kind: EventKind = "alb-multi-value" if "multiValueHeaders" in event else "alb"
            return _checked(event, kind, ("httpMethod", "path"))
        if context.get("eventType") in ("CONNECT", "MESSAGE", "DISCONNECT") or (
            "connectionId" in context
        ):
            raise _unsupported(
                f"an API Gateway WebSocket event ({context.get('eventType', 'no eventType')})",
                "WebSocket routes need a handler of their own",
            )
        if "serviceNetworkArn" in context or "targetGroupArn" in context:
            raise _unsupported("a VPC Lattice event (version 2.0)")
        if event.get("version") == "2.0":
            http = context.get("http")
            if type(http) is not dict and not isinstance(http, Mapping):
                raise UnsupportedEvent(
                    "make_handler cannot serve this version 2.0 event: it has no"
                    f" requestContext.http (keys: {_keys(context)}); {_supported()}"
                )
            kind = _v2_kind(context)
            if type(event.get("rawPath")) is str and type(event.get("body", "")) is str:
                return kind  # `_checked()`'s common case, without the call
            return _checked(event, kind, ("rawPath",))
        if "httpMethod" in event:
            kind = "http-v1" if event.get("version") == "1.0" else "rest-v1"
            return _checked(event, kind, ("path",))
    if "raw_path" in event and "method" in event:
        raise _unsupported("a VPC Lattice event (version 1.0)")
    records = event.get("Records")
    if isinstance(records, list) and records and _is_mapping(records[0]):
        first = records[0]
        if "cf" in first:
            raise _unsupported("a CloudFront Lambda@Edge event")
        source = str(first.get("eventSource") or first.get("EventSource") or "")
        what = _RECORD_SOURCES.get(source, f"a batch of records (eventSource {source!r})")
        raise _unsupported(what, "event-source mappings need a handler of their own")
    if "source" in event and "detail-type" in event:
        raise _unsupported(f"an EventBridge event (detail-type {event.get('detail-type')!r})")
    if "RequestType" in event and "ResponseURL" in event:
        raise _unsupported("a CloudFormation custom resource event")
    if "triggerSource" in event and "userPoolId" in event:
        raise _unsupported(f"a Cognito trigger ({event.get('triggerSource')!r})")
    raise UnsupportedEvent(
        f"make_handler cannot serve a payload with keys {_keys(event)}: {_supported()}."
        " A direct invocation can run a management command instead"
        ' ({"serverless-pool-command": ["migrate", "--noinput"]}, with commands= enabled)'
    )


def describe(kind: str) -> str:
    """The human name of a supported kind."""
    return HTTP_KINDS.get(kind, kind)


_AUTHORIZER_TYPES: Final = ("TOKEN", "REQUEST")


def _v2_kind(context: Mapping[str, Any]) -> EventKind:
    """A version 2.0 request's kind: a Function URL's domain names it, else HTTP API."""
    domain = context.get("domainName")
    return "function-url" if type(domain) is str and ".lambda-url." in domain else "http-v2"


def _is_mapping(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _checked(event: Mapping[str, Any], kind: EventKind, required: tuple[str, ...]) -> EventKind:
    for key in required:
        if not isinstance(event.get(key), str):
            missing = [key for key in required if not isinstance(event.get(key), str)]
            raise UnsupportedEvent(
                f"this {describe(kind)} event is malformed: {', '.join(missing)} missing or"
                " not a string"
            )
    if event.get("isBase64Encoded"):
        body = event.get("body") or ""
        if not isinstance(body, str):
            raise UnsupportedEvent(
                f"this {describe(kind)} event is malformed: isBase64Encoded is set but the body"
                f" is {_article(body)}"
            )
    return kind


def check_body(event: object) -> None:
    """After an adapter failed to decode the body: `UnsupportedEvent` if the body is not
    base64 although the event says it is; else nothing (the error came from elsewhere).

    Checked after the fact rather than before every request: the adapters decode the
    body anyway, before the app runs, and a check of every body costs every request.
    """
    if not isinstance(event, Mapping) or not event.get("isBase64Encoded"):
        return
    body = event.get("body") or ""
    try:
        # strict: what base64.b64decode(validate=True) checks, without its regex
        binascii.a2b_base64(str(body).encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        kind = "HTTP API payload 2.0" if event.get("version") == "2.0" else "HTTP"
        raise UnsupportedEvent(
            f"this {kind} event is malformed: isBase64Encoded is set but the body"
            f" ({len(str(body))} characters) is not valid base64"
        ) from None


def _unsupported(what: str, hint: str = "") -> UnsupportedEvent:
    tail = f" ({hint})" if hint else ""
    return UnsupportedEvent(f"make_handler cannot serve {what}{tail}: {_supported()}")


def _supported() -> str:
    return f"it serves HTTP requests from {SUPPORTED}"


def _keys(mapping: Mapping[str, Any], limit: int = 8) -> str:
    names = sorted(str(k) for k in mapping)
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]" if names else "[] (empty)"


def _article(value: object) -> str:
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"
