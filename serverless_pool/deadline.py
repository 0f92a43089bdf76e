"""The deadline of the work in progress (e.g. a Lambda invocation).

A borrow never waits past it: the pool's acquire timeout, and its connect retries, are
cut short to the time that remains. It is a context variable, so threads started by
asgiref or Flask for one request see the deadline of that request only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_deadline", "deadline_after", "remaining"]

_deadline: ContextVar[float | None] = ContextVar("serverless_pool_deadline", default=None)


@contextmanager
def deadline_after(seconds: float) -> Iterator[float]:
    """Within the block, no borrow waits beyond `seconds` from now."""
    deadline = time.monotonic() + seconds
    outer = _deadline.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    """The active deadline on the `time.monotonic()` clock, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the active deadline (never negative), or None."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())
