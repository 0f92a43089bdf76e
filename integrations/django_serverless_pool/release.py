"""Giving this thread's pooled connections back to their pools."""

from __future__ import annotations

from django.db import connections

from serverless_pool import ServerlessPool

from .backends.postgresql import pools

__all__ = ["pool_of", "release_connections"]


def pool_of(alias: str) -> ServerlessPool:
    """The pool of a database alias using this ENGINE (built if needed)."""
    from .backends.postgresql.base import DatabaseWrapper

    wrapper = connections[alias]
    if not isinstance(wrapper, DatabaseWrapper):
        raise TypeError(f"database {alias!r} does not use django_serverless_pool's ENGINE")
    return wrapper.serverless_pool


def release_connections() -> int:
    """Return every pooled connection this thread holds, except inside ``atomic()``.

    Returns how many went back. Connections of other backends are left alone.
    """
    released = 0
    for wrapper in pools.borrowers():
        released += wrapper.release_to_pool()
    return released
