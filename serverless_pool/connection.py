"""The connection and cursor classes the pool hands out (see `serverless_pool._psycopg`).

`PooledConnection` behaves exactly like `psycopg.Connection`; `PooledCursorMixin` goes
in front of any psycopg cursor class whose statements should get the pool's hooks (the
borrow's first statement sent again where it provably never ran, the deadline's bound).
"""

from __future__ import annotations

from ._psycopg import (
    PooledClientCursor,
    PooledConnection,
    PooledCursor,
    PooledCursorMixin,
    PooledRawCursor,
    PooledServerCursor,
)

__all__ = [
    "PooledClientCursor",
    "PooledConnection",
    "PooledCursor",
    "PooledCursorMixin",
    "PooledRawCursor",
    "PooledServerCursor",
]
