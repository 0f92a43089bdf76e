"""serverless-pool: PostgreSQL connections for serverless functions, fast and safe.

``from serverless_pool import ServerlessPool``; ``with pool.connection() as conn: ...``
"""

from __future__ import annotations

from .connection import PooledConnection
from .deadline import deadline_after
from .errors import (
    CommitOutcomeUnknown,
    ConnectionFailed,
    PoolClosed,
    PoolError,
    PoolTimeout,
    SettingsError,
    StatementOutcomeUnknown,
)
from .pool import ServerlessPool
from .settings import SCHEMA, PoolSettings
from .statement_deadline import bound_statements_by_deadline

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "CommitOutcomeUnknown",
    "ConnectionFailed",
    "PoolClosed",
    "PoolError",
    "PoolSettings",
    "PoolTimeout",
    "PooledConnection",
    "ServerlessPool",
    "SettingsError",
    "StatementOutcomeUnknown",
    "__version__",
    "bound_statements_by_deadline",
    "deadline_after",
]
