"""Process lifecycle: every live pool is closed at exit and on SIGTERM, and made safe
after ``fork()`` and around a Lambda SnapStart snapshot.

A frozen-then-killed Lambda instance cannot say goodbye, but one that receives SIGTERM
(Lambda sends it when an extension is registered) or exits normally can, and a server
slot is freed at once instead of after a timeout.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import ServerlessPool

__all__ = ["close_all", "install_sigterm_handler", "live_pools", "pools_on_loan", "register"]

logger = logging.getLogger("serverless_pool")

# Weak references by id: iterating a WeakSet costs a generator and a guard object, and
# `live_pools()` runs at the end of every Lambda invocation.
_pools: dict[int, weakref.ref[ServerlessPool]] = {}
_installed_lock = threading.Lock()
_sigterm_installed = False
_process_hooks_installed = False

Handler = Callable[[int, FrameType | None], Any] | int | None


def live_pools() -> list[ServerlessPool]:
    """The pools of this process that are still referenced (closed ones included)."""
    pools = []
    for ref in list(_pools.values()):
        pool = ref()
        if pool is not None:
            pools.append(pool)
    return pools


def pools_on_loan() -> list[tuple[ServerlessPool, int]]:
    """The open pools that have connections on loan, and how many: ``make_handler`` asks
    at the end of every invocation, and nearly always gets an empty list."""
    found = []
    for ref in list(_pools.values()):
        pool = ref()
        if pool is not None:
            lent = pool.on_loan()
            if lent and not pool.closed:
                found.append((pool, lent))
    return found


def register(pool: ServerlessPool) -> None:
    """Track `pool` for exit, SIGTERM, fork and SnapStart handling."""
    _install_process_hooks()
    key = id(pool)

    def forget(_: object) -> None:
        _pools.pop(key, None)

    _pools[key] = weakref.ref(pool, forget)
    if pool.settings.close_on_sigterm:
        install_sigterm_handler()


def close_all() -> None:
    """Close every live pool; safe to call from a signal handler."""
    for pool in live_pools():
        try:
            pool._close_for_shutdown()
        except Exception:
            logger.exception("closing pool %r at shutdown failed", pool.name)


def install_sigterm_handler() -> bool:
    """Install the SIGTERM handler once; returns whether it is installed.

    Only the main thread may install signal handlers: from another thread this does
    nothing (the exit hook still closes the pools).
    """
    global _sigterm_installed
    with _installed_lock:
        if _sigterm_installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not installing the SIGTERM handler outside the main thread")
            return False
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _make_sigterm_handler(previous))
        _sigterm_installed = True
        return True


def _make_sigterm_handler(previous: Handler) -> Callable[[int, FrameType | None], None]:
    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        close_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            # Default disposition: die of SIGTERM as the process would have.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    return on_sigterm


def _after_fork_in_child() -> None:
    for pool in live_pools():
        pool._forget_after_fork()


def _before_snapshot() -> None:
    for pool in live_pools():
        pool.drain()


def _after_restore() -> None:
    for pool in live_pools():
        pool.drain()


def _install_process_hooks() -> None:
    global _process_hooks_installed
    with _installed_lock:
        if _process_hooks_installed:
            return
        _process_hooks_installed = True
    atexit.register(close_all)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _install_snapstart_hooks()


def _install_snapstart_hooks() -> bool:
    """Register with Lambda SnapStart's runtime hooks when they are importable."""
    try:
        import snapshot_restore_py  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return False
    snapshot_restore_py.register_before_snapshot(_before_snapshot)
    snapshot_restore_py.register_after_restore(_after_restore)
    return True
