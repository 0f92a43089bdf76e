"""The server's connection budget: how many sessions a fleet of pools may hold.

Every integration's check command reads it the same way, from the server itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["Budget", "read_budget"]


@dataclass(frozen=True)
class Budget:
    """Connection slots on one server, as seen by an ordinary (non-superuser) role."""

    max_connections: int
    #: slots only superusers (and, from PostgreSQL 16, roles in pg_use_reserved_connections) get
    reserved: int
    #: client sessions open right now, on every database
    in_use: int
    #: this role's own limit (``ALTER ROLE ... CONNECTION LIMIT``), or None
    role_limit: int | None
    #: this database's own limit (``ALTER DATABASE ... CONNECTION LIMIT``), or None
    database_limit: int | None

    @property
    def usable(self) -> int:
        """Slots an ordinary role can ever get on this server."""
        limits = [self.max_connections - self.reserved]
        limits += [x for x in (self.role_limit, self.database_limit) if x is not None]
        return max(0, min(limits))

    @property
    def free(self) -> int:
        return max(0, self.max_connections - self.reserved - self.in_use)

    def fits(self, max_size: int, instances: int) -> bool:
        """Whether `instances` pools of `max_size` connections fit in the usable slots."""
        return max_size * instances <= self.usable


def read_budget(conn: psycopg.Connection[Any]) -> Budget:
    """Read the budget through an open connection (any role; no superuser needed)."""
    row = conn.execute(
        """
        SELECT current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int
                 + coalesce(current_setting('reserved_connections', true)::int, 0),
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
               (SELECT NULLIF(rolconnlimit, -1) FROM pg_roles WHERE rolname = current_user),
               (SELECT NULLIF(datconnlimit, -1) FROM pg_database
                 WHERE datname = current_database())
        """
    ).fetchone()
    assert row is not None
    return Budget(*row)
