"""Fixtures shared by every test: one real PostgreSQL server for the whole run.

The server is started here (never assumed to be running), on a free port on
127.0.0.1, with password authentication, and removed at the end of the session.
Tests that need a server of their own (lowered max_connections, restarts) start one
with the `make_postgres` factory, so faults never leak into other tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The shared server. Do not restart it or change its settings: use `make_postgres`."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def make_postgres() -> Iterator[Callable[..., PostgresServer]]:
    """Start a private server for one test (for restarts and lowered limits)."""
    servers: list[PostgresServer] = []

    def start(**kwargs: Any) -> PostgresServer:
        server = PostgresServer(**kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def app_name() -> str:
    """A unique application_name, to find this test's sessions in pg_stat_activity."""
    return f"test-{next(_names)}"


@pytest.fixture
def make_pool(postgres: PostgresServer, app_name: str) -> Iterator[Callable[..., ServerlessPool]]:
    """Build pools against the shared server; all are closed after the test."""
    pools: list[ServerlessPool] = []

    def make(conninfo: Any = None, **settings: Any) -> ServerlessPool:
        settings.setdefault("application_name", app_name)
        pool = ServerlessPool(conninfo or postgres.conninfo(), **settings)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def pool(make_pool: Callable[..., ServerlessPool]) -> ServerlessPool:
    return make_pool()
