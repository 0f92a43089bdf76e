"""The deadline of the work in progress (e.g. a Lambda invocation).

A borrow never waits past it: the pool's acquire timeout, and its connect retries, are
cut short to the time that remains. It is a context variable, so threads started by
asgiref or Flask for one request see the deadline of that request only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Final

__all__ = [
    "current_deadline",
    "deadline_after",
    "end_deadline",
    "on_first_deadline",
    "remaining",
    "start_deadline",
]

_deadline: ContextVar[float | None] = ContextVar("serverless_pool_deadline", default=None)

# Work that only a deadline needs is set up when the process's first deadline block
# starts, and then stays: outside of any deadline it costs nothing, and a process that
# has had one (a Lambda instance: every invocation has one) pays nothing per block.
_first_seen = False
_first_lock = threading.Lock()
_on_first: list[Callable[[], None]] = []


def start_deadline(seconds: float) -> Token[float | None]:
    """Set the deadline `seconds` from now (or keep an earlier one); `end_deadline()` it.

    `deadline_after` without the context manager, for a caller that runs it for every
    request and has a ``finally`` already (``make_handler``).
    """
    deadline = time.monotonic() + seconds
    outer = _deadline.get()
    if outer is not None and outer < deadline:
        deadline = outer
    if not _first_seen:
        _start_first()
    return _deadline.set(deadline)


def end_deadline(token: Token[float | None]) -> None:
    """Restore the deadline `start_deadline()` replaced."""
    _deadline.reset(token)


class deadline_after:
    """Within the block, no borrow waits beyond `seconds` from now (nor any wait for the
    server, see `serverless_pool.silent_server`).

    ``with deadline_after(2.5) as deadline:`` binds the deadline on the `time.monotonic()`
    clock.
    """

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __enter__(self) -> float:
        self._token = start_deadline(self._seconds)
        deadline = _deadline.get()
        assert deadline is not None
        return deadline

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end_deadline(self._token)


def on_first_deadline(callback: Callable[[], None]) -> None:
    """Call `callback()` when the process's first deadline block starts (now, if one has)."""
    with _first_lock:
        if _first_seen:
            callback()
        else:
            _on_first.append(callback)


def _reset_after_fork() -> None:
    global _first_lock
    _first_lock = threading.Lock()  # another thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_after_fork)


def _start_first() -> None:
    global _first_seen
    with _first_lock:
        if _first_seen:
            return
        for callback in _on_first:
            callback()
        _first_seen = True


#: The active deadline on the `time.monotonic()` clock, or None. The context variable's
#: own method: it is read before every wait for the server.
current_deadline: Final[Callable[[], float | None]] = _deadline.get


def remaining() -> float | None:
    """Seconds left before the active deadline (never negative), or None."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())
