"""Cursor classes with the pool's hooks (`PooledCursorMixin`) mixed in front.

The connection keeps the cursor class Django chose, or the user's
``OPTIONS["cursor_factory"]``, as its ``cursor_factory``, exactly as with Django's own
backend; the wrapper creates its cursors from `pooled()` of that class, so statements
still go through the pool's hooks (the check before a borrow's first statement).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db.backends.postgresql import base as django_base

from serverless_pool.connection import PooledCursorMixin

__all__ = ["ServerSideCursor", "pooled"]


@cache
def pooled(cursor_class: type[Any]) -> type[Any]:
    """`cursor_class`, or a subclass of it with the pool's hooks when it lacks them."""
    if issubclass(cursor_class, PooledCursorMixin):
        return cursor_class
    return type(f"Pooled{cursor_class.__name__}", (PooledCursorMixin, cursor_class), {})


#: Django's named cursor with client-side binding (``QuerySet.iterator()``), from
#: Django 5.0; None before, where named cursors bind on the server.
ServerSideCursor: type[Any] | None = (
    pooled(django_base.ServerSideCursor) if hasattr(django_base, "ServerSideCursor") else None
)
