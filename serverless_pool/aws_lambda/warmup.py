"""Warm-up pings: invocations that keep an instance alive and must not reach the app.

Two shapes are recognised: an EventBridge (CloudWatch Events) scheduled event, the usual
way to ping a function every few minutes, and a payload carrying a marker key, for
pingers that invoke the function directly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MARKER", "is_warmup"]

DEFAULT_MARKER = "serverless-pool-warmup"


def is_warmup(event: object, marker: str | None = DEFAULT_MARKER) -> bool:
    """Whether `event` is a warm-up ping rather than a request for the app."""
    if not isinstance(event, dict):
        return False
    payload: dict[str, Any] = event
    if payload.get("source") == "aws.events" and payload.get("detail-type") == "Scheduled Event":
        return True
    return marker is not None and bool(payload.get(marker))
