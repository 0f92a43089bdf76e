"""Helpers shared by the Lambda tests: events, contexts, response decoding."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
EVENTS = HERE / "events"
FUNCTIONS = HERE / "functions"
REPO = HERE.parents[1]

if str(HERE) not in sys.path:
    sys.path.append(str(HERE))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass (bounded)."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def concurrently(call: Callable[[], T], threads: int, times: int = 1) -> list[T]:
    """Run `call` `times` times in each of `threads` threads at once; every result."""
    results: list[T] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(times):
            result = call()
            with lock:
                results.append(result)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(300)
    return results


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def decode_response(response: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (repeated ones kept) and body of any event source's response."""
    headers: list[tuple[str, str]] = []
    multi = response.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers.extend((name.lower(), str(v)) for v in values)
    for name, value in (response.get("headers") or {}).items():
        if name.lower() not in {k for k, _ in headers}:
            headers.append((name.lower(), str(value)))
    headers.extend(("set-cookie", c) for c in response.get("cookies") or ())
    raw = response.get("body") or ""
    body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
    return int(response["statusCode"]), headers, body


def retarget(
    event: dict[str, Any], method: str, path: str, body: bytes = b"", content_type: str = ""
) -> dict[str, Any]:
    """`event` (any source) turned into ``method path`` with `body` and no query string."""
    event = json.loads(json.dumps(event))
    encoded = base64.b64encode(body).decode()
    event.update(body=encoded if body else "", isBase64Encoded=bool(body))
    for key in ("queryStringParameters", "multiValueQueryStringParameters"):
        event.pop(key, None)
    if event.get("version") == "2.0":
        event.update(rawPath=path, rawQueryString="")
        event["requestContext"]["http"].update(method=method, path=path)
        if content_type:
            event["headers"]["content-type"] = content_type
        return event
    event.update(path=path, httpMethod=method)
    if "multiValueHeaders" in event:
        event["multiValueHeaders"] = {
            k: v for k, v in event["multiValueHeaders"].items() if k.lower() != "content-type"
        }
        if content_type:
            event["multiValueHeaders"]["Content-Type"] = [content_type]
    if "headers" in event:
        event["headers"] = {
            k: v for k, v in event["headers"].items() if k.lower() != "content-type"
        }
        if content_type:
            event["headers"]["Content-Type"] = content_type
    return event
