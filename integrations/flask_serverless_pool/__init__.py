"""Flask extension for serverless-pool.

``from flask_serverless_pool import ServerlessPool``; ``db = ServerlessPool(app)`` (or
``db.init_app(app)`` in an application factory); in a view,
``with db.connection() as conn: conn.execute(...)``.
"""

from __future__ import annotations

from .extension import EXTENSION_KEY, PoolState, ServerlessPool

__all__ = ["EXTENSION_KEY", "PoolState", "ServerlessPool"]
