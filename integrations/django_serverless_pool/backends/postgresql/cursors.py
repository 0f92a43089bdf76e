"""Django's psycopg 3 cursor classes with the pool's hooks mixed in front.

Without `PooledCursorMixin`, statements would skip the pool's check before the first
statement of a borrow and its tracking of session changes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db.backends.postgresql import base as django_base

from serverless_pool.connection import PooledCursorMixin

__all__ = ["Cursor", "ServerBindingCursor", "ServerSideCursor", "pooled"]


class Cursor(PooledCursorMixin, django_base.Cursor):
    """Django's default cursor (client-side binding)."""


class ServerBindingCursor(PooledCursorMixin, django_base.ServerBindingCursor):
    """Django's cursor for ``OPTIONS["server_side_binding"] = True``."""


class ServerSideCursor(PooledCursorMixin, django_base.ServerSideCursor):
    """Django's named cursor (``QuerySet.iterator()``), client-side binding."""


@cache
def pooled(cursor_class: type[Any]) -> type[Any]:
    """`cursor_class`, or a subclass of it with the pool's hooks when it lacks them."""
    if issubclass(cursor_class, PooledCursorMixin):
        return cursor_class
    return type(f"Pooled{cursor_class.__name__}", (PooledCursorMixin, cursor_class), {})
