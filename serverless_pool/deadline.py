"""The deadline of the work in progress (e.g. a Lambda invocation).

A borrow never waits past it: the pool's acquire timeout, and its connect retries, are
cut short to the time that remains. It is a context variable, so threads started by
asgiref or Flask for one request see the deadline of that request only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

__all__ = ["current_deadline", "deadline_after", "on_deadlines", "remaining"]

_deadline: ContextVar[float | None] = ContextVar("serverless_pool_deadline", default=None)

# How many deadline blocks run in this process, and who wants to know when the first
# starts and the last ends: work that only a deadline needs can then cost nothing
# outside of one (see `serverless_pool.silent_server`).
_active = 0
_active_lock = threading.Lock()
_watchers: list[Callable[[bool], None]] = []


@contextmanager
def deadline_after(seconds: float) -> Iterator[float]:
    """Within the block, no borrow waits beyond `seconds` from now."""
    deadline = time.monotonic() + seconds
    outer = _deadline.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _deadline.set(deadline)
    _count(1)
    try:
        yield deadline
    finally:
        _deadline.reset(token)
        _count(-1)


def on_deadlines(watcher: Callable[[bool], None]) -> None:
    """Call `watcher(True)` when the process's first deadline block starts (now, if one
    runs already), and `watcher(False)` when the last one ends."""
    with _active_lock:
        _watchers.append(watcher)
        if _active:
            watcher(True)


def _count(step: int) -> None:
    global _active
    with _active_lock:
        _active += step
        if _active == (1 if step > 0 else 0):
            for watcher in _watchers:
                watcher(step > 0)


def _reset_after_fork() -> None:
    global _active_lock
    _active_lock = threading.Lock()  # another thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_after_fork)


#: The active deadline on the `time.monotonic()` clock, or None. The context variable's
#: own method: it is read before every wait for the server.
current_deadline: Final[Callable[[], float | None]] = _deadline.get


def remaining() -> float | None:
    """Seconds left before the active deadline (never negative), or None."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())
