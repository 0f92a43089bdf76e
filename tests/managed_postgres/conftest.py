"""Fixtures for managed-PostgreSQL behaviour: a local AWS API (moto's server) and a
role whose password the tests rotate, on a server of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg import sql

from serverless_pool.testing.aws import MotoServer
from serverless_pool.testing.postgres import PostgresServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """boto3 in this test talks to the local moto server."""
    for name, value in moto_server.environ().items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def secrets(aws: MotoServer) -> Any:
    import boto3

    return boto3.client("secretsmanager")


@pytest.fixture(scope="module")
def rotating_postgres() -> Iterator[PostgresServer]:
    """A server whose roles' passwords the tests of a module change."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def role(rotating_postgres: PostgresServer, app_name: str) -> Iterator[str]:
    """A login role of this test's own (so rotations never collide), owning nothing."""
    name = app_name.replace("-", "_")
    with rotating_postgres.superuser_connection() as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'first-password'").format(sql.Identifier(name))
        )
    yield name
    mine = [b.pid for b in rotating_postgres.backends() if b.user == name]
    rotating_postgres.terminate_backends(pids=mine)
    with rotating_postgres.superuser_connection() as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def set_password(rotating_postgres: PostgresServer) -> Callable[[str, str], None]:
    def set_password(role: str, password: str) -> None:
        with rotating_postgres.superuser_connection() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )

    return set_password
