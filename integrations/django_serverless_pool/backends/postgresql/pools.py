"""One `ServerlessPool` per database alias, built at the first borrow, never at start-up.

A pool is rebuilt when what it is built from changes (the wrapper's key: the
``DATABASES`` entry with its ``OPTIONS``, ``SERVERLESS_POOL``, the time zone): the test
runner renaming the database, ``override_settings``, a change made in place. The old
pool is closed then: its idle connections at once, its loans when they come back.
After ``fork()`` the child forgets every pool (the core makes sure the parent's sockets
are never touched) and builds its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed

from serverless_pool import ServerlessPool

if TYPE_CHECKING:
    from .base import DatabaseWrapper

__all__ = [
    "all_pools",
    "borrowers",
    "build_pools",
    "close_pools",
    "get_pool",
    "lent",
    "returned",
    "track_wrapper",
]

_WATCHED = frozenset({"DATABASES", "SERVERLESS_POOL", "TIME_ZONE", "USE_TZ"})

_lock = threading.Lock()
_pools: dict[str, tuple[Hashable, ServerlessPool]] = {}
_wrappers: weakref.WeakSet[DatabaseWrapper] = weakref.WeakSet()
_generation = 0


class _Loans(threading.local):
    """The wrappers of this thread holding a borrowed connection (Django's connections
    are per thread), so releasing at the end of a request walks no other alias."""

    def __init__(self) -> None:
        self.wrappers: list[DatabaseWrapper] = []


_loans = _Loans()


def generation() -> int:
    """Bumped whenever settings that shape the pools change."""
    return _generation


def get_pool(alias: str, key: Hashable, build: Callable[[], ServerlessPool]) -> ServerlessPool:
    """The pool of `alias` for `key`, building it (and closing an outdated one) if needed."""
    found = _pools.get(alias)
    if found is not None and found[0] == key:
        return found[1]
    with _lock:
        found = _pools.get(alias)
        if found is not None and found[0] == key:
            return found[1]
        pool = build()
        _pools[alias] = (key, pool)
    if found is not None:
        found[1].close()
    return pool


def all_pools() -> dict[str, ServerlessPool]:
    """The pools built so far in this process, by alias."""
    return {alias: pool for alias, (_, pool) in _pools.items()}


def build_pools() -> dict[str, ServerlessPool]:
    """Build, without connecting, the pool of every alias that uses this ``ENGINE``.

    For start-up code that wants connections before the first request (the Lambda
    handler's ``connect_on_init``): pools are otherwise built at each alias's first use.
    """
    from django.db import connections

    built: dict[str, ServerlessPool] = {}
    for alias in connections:
        wrapper = connections[alias]
        pool = getattr(wrapper, "serverless_pool", None)
        if isinstance(pool, ServerlessPool):
            built[alias] = pool
    return built


def close_pools(alias: str | None = None) -> None:
    """Close the pool of `alias` (or every pool); the next borrow builds a new one."""
    global _generation
    with _lock:
        _generation += 1
        if alias is None:
            closing = list(_pools.values())
            _pools.clear()
        else:
            one = _pools.pop(alias, None)
            closing = [] if one is None else [one]
    for _, pool in closing:
        pool.close()


def track_wrapper(wrapper: DatabaseWrapper) -> None:
    """Remember `wrapper` so that a forked child can drop its borrowed connection."""
    _wrappers.add(wrapper)


def lent(wrapper: DatabaseWrapper) -> None:
    """`wrapper` (of the current thread) borrowed a connection."""
    wrappers = _loans.wrappers
    wrappers.append(wrapper)
    # Its thread's list, for `returned()` called from another thread (the pool taking
    # the connection back at the end of an invocation).
    wrapper._sp_loans = wrappers


def returned(wrapper: DatabaseWrapper) -> None:
    """`wrapper` gave its connection back (called under the wrapper's lock)."""
    wrappers = wrapper._sp_loans
    if wrapper in wrappers:
        wrappers.remove(wrapper)


def borrowers() -> list[DatabaseWrapper]:
    """The wrappers of the current thread that hold a borrowed connection."""
    return list(_loans.wrappers)


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _WATCHED:
        close_pools()


def _after_fork_in_child() -> None:
    global _generation, _lock
    _lock = threading.Lock()  # another thread may have held it at fork time
    _loans.wrappers = []
    # The core disowns the parent's connections; here Django's objects forget them.
    _pools.clear()
    _generation += 1
    for wrapper in list(_wrappers):
        wrapper._sp_forget_after_fork()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_serverless_pool.pools")
os.register_at_fork(after_in_child=_after_fork_in_child)
