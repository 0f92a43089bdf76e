"""One PostgreSQL server that logs every statement, and a PgBouncer in front of it.

Shared by the proxy tests (package scope): none of them restarts or reconfigures
either server. The statement log is how the tests see what the pool sent, so
`statements()` reads it back, filtered by the test's application_name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.pgbouncer import PgBouncerServer
from serverless_pool.testing.postgres import PostgresServer


@pytest.fixture(scope="package")
def logged_postgres() -> Iterator[PostgresServer]:
    settings = {
        "log_statement": "'all'",
        # "%a|" puts the application_name in front of every statement logged.
        "log_line_prefix": "'%a|'",
        "log_min_messages": "notice",
    }
    with PostgresServer(settings=settings) as server:
        yield server


@pytest.fixture(scope="package")
def pgbouncer(logged_postgres: PostgresServer) -> Iterator[PgBouncerServer]:
    with PgBouncerServer(logged_postgres, default_pool_size=2) as proxy:
        yield proxy


@pytest.fixture
def statements(logged_postgres: PostgresServer) -> Callable[[str], list[str]]:
    """What the server logged for one application_name: ``statement: ...`` for the
    simple protocol, ``execute <unnamed>: ...`` or ``execute _pg3_0: ...`` (a prepared
    statement) for the extended one."""

    def read(application_name: str) -> list[str]:
        prefix = f"{application_name}|LOG:  "
        return [
            line[len(prefix) :]
            for line in logged_postgres.iter_log()
            if line.startswith(prefix) and line[len(prefix) :].startswith(("statement:", "execute"))
        ]

    return read


@pytest.fixture
def make_proxy_pool(app_name: str) -> Iterator[Callable[..., ServerlessPool]]:
    """Build pools against any conninfo; all are closed after the test."""
    pools: list[ServerlessPool] = []

    def make(conninfo: str, **settings: Any) -> ServerlessPool:
        settings.setdefault("application_name", app_name)
        pool = ServerlessPool(conninfo, **settings)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
