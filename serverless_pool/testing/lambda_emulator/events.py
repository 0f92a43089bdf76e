"""HTTP requests to API Gateway HTTP API (payload 2.0) events, and responses back; and
the context object an invocation comes with.

Written from the AWS documentation of the 2.0 payload format: lower-cased headers with
repeated values joined by commas, cookies in their own list, the raw path and query
string, and a base64 body for anything that is not text.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["HttpResponse", "http_api_event", "http_response", "lambda_context"]

_TEXT = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")


def http_api_event(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    source_ip: str = "127.0.0.1",
    stage: str = "$default",
) -> dict[str, Any]:
    """The event API Gateway sends for ``method target`` (path and query string)."""
    raw_path, _, raw_query = target.partition("?")
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    content_type = merged.get("content-type", "")
    is_text = not body or content_type.startswith(_TEXT)
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path or "/",
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "emulator",
            "domainName": merged.get("host", "localhost"),
            "domainPrefix": merged.get("host", "localhost").split(".")[0],
            "http": {
                "method": method.upper(),
                "path": raw_path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": stage,
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": not is_text,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = body.decode() if is_text else base64.b64encode(body).decode()
    return event


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_response(result: Any) -> HttpResponse:
    """The HTTP response API Gateway makes of a 2.0-format function result."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # The 2.0 format treats any other value as a JSON body with status 200.
        return HttpResponse(
            200, [("Content-Type", "application/json")], json.dumps(result).encode()
        )
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(value)) for value in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or ())
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return HttpResponse(int(result["statusCode"]), headers, body)


def lambda_context(remaining_ms: int = 30_000) -> Any:
    """The context object awslambdaric itself builds for an invocation, with
    `remaining_ms` left, for calling a handler in-process."""
    # awslambdaric: a dependency of the emulator and the tests, not of the core
    from awslambdaric.lambda_context import LambdaContext  # type: ignore[import-untyped]

    return LambdaContext(
        str(uuid.uuid4()),
        None,
        None,
        int(time.time() * 1000) + remaining_ms,
        "arn:aws:lambda:us-east-1:123456789012:function:tests",
        None,
    )
