"""The server's connection budget, and how many sessions a fleet of pools may hold.

Every check command reads the budget the same way, from the server itself, and counts
the fleet the same way: ``max_size`` per process × worker processes per execution
environment (``AWS_LAMBDA_MAX_CONCURRENCY`` on Lambda Managed Instances, 1 on on-demand
Lambda) × environments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["Budget", "Fleet", "read_budget"]


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


@dataclass(frozen=True)
class Fleet:
    """The connections a fleet of execution environments may hold at once.

    One environment runs `workers_per_environment` processes (Lambda Managed Instances
    forks ``AWS_LAMBDA_MAX_CONCURRENCY`` of them; on-demand Lambda runs one), each with a
    pool of up to `max_size` connections. `environments` is how many environments may
    run at once (the function's concurrency), or None when nobody said.
    """

    max_size: int
    workers_per_environment: int = 1
    environments: int | None = None

    @property
    def per_environment(self) -> int:
        """Connections one execution environment may hold."""
        return self.max_size * self.workers_per_environment

    @property
    def connections(self) -> int | None:
        """Connections the whole fleet may hold (None without `environments`)."""
        return None if self.environments is None else self.per_environment * self.environments

    def fits(self, budget: Budget) -> bool | None:
        """Whether the fleet fits in the server's usable slots (None without `environments`)."""
        needed = self.connections
        return None if needed is None else needed <= budget.usable

    def environments_that_fit(self, budget: Budget) -> int:
        """How many environments the usable slots hold at this size."""
        return budget.usable // self.per_environment


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
