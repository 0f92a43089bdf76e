"""Transactions commit or roll back, sessions are never left idle in transaction, and a
backend the server ended between requests costs no failed request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from flask import Flask, abort
from flask_serverless_pool import ServerlessPool

from serverless_pool.testing.postgres import PostgresServer

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]


def run_as_app(postgres: PostgresServer, query: str) -> list[tuple[object, ...]]:
    """Run one statement in the app's database, outside any pool."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def table(postgres: PostgresServer, app_name: str) -> Iterator[str]:
    name = f"flask_items_{app_name.replace('-', '_')}"
    run_as_app(postgres, f"CREATE TABLE {name} (id serial PRIMARY KEY, label text NOT NULL)")
    yield name
    run_as_app(postgres, f"DROP TABLE {name}")


def labels(postgres: PostgresServer, table: str) -> list[str]:
    return [str(row[0]) for row in run_as_app(postgres, f"SELECT label FROM {table} ORDER BY id")]


def add_routes(app: Flask, db: ServerlessPool, table: str) -> None:
    @app.post("/items/<label>")
    def create(label: str) -> str:
        with db.transaction() as conn:
            conn.execute(f"INSERT INTO {table} (label) VALUES (%s)", (label,))
            conn.execute(f"INSERT INTO {table} (label) VALUES (%s)", (label + "-2",))
            if label.startswith("bad"):
                raise ValueError("refused after two inserts")
        return "created"

    @app.post("/nested/<label>")
    def nested(label: str) -> str:
        with db.transaction() as conn:
            conn.execute(f"INSERT INTO {table} (label) VALUES (%s)", ("outer",))
            try:
                with db.transaction() as inner:
                    inner.execute(f"INSERT INTO {table} (label) VALUES (%s)", (label,))
                    raise LookupError("undo the inner block only")
            except LookupError:
                pass
        return "nested"

    @app.post("/abort-in-transaction")
    def abort_inside() -> str:
        with db.transaction() as conn:
            conn.execute(f"INSERT INTO {table} (label) VALUES ('aborted')")
            abort(409)
        return "unreachable"


@pytest.mark.parametrize("autocommit", [True, False])
def test_transaction_commits_on_success_and_rolls_back_on_exception(
    make_app: MakeApp, postgres: PostgresServer, table: str, autocommit: bool
) -> None:
    app, db = make_app(TESTING=False, SERVERLESS_POOL_AUTOCOMMIT=autocommit)
    add_routes(app, db, table)
    client = app.test_client()
    assert client.post("/items/good").status_code == 200
    assert client.post("/items/bad").status_code == 500
    assert client.post("/abort-in-transaction").status_code == 409
    assert labels(postgres, table) == ["good", "good-2"]
    assert db.get_pool(app).stats()["pool_in_use"] == 0


def test_nested_transaction_rolls_back_only_the_inner_block(
    make_app: MakeApp, postgres: PostgresServer, table: str
) -> None:
    app, db = make_app()
    add_routes(app, db, table)
    assert app.test_client().post("/nested/inner").status_code == 200
    assert labels(postgres, table) == ["outer"]


def test_no_session_is_left_idle_in_transaction(
    make_app: MakeApp, postgres: PostgresServer, table: str, app_name: str
) -> None:
    app, db = make_app(TESTING=False, SERVERLESS_POOL_AUTOCOMMIT=False)

    @app.post("/forgets-to-commit")
    def forgets() -> str:
        with db.connection() as conn:
            conn.execute(f"INSERT INTO {table} (label) VALUES ('never committed')")
        return "left a transaction open"

    @app.post("/fails-mid-transaction")
    def fails() -> str:
        with db.connection() as conn:
            conn.execute(f"INSERT INTO {table} (label) VALUES ('half')")
            conn.execute("SELECT 1 / 0")
        return "unreachable"

    client = app.test_client()
    assert client.post("/forgets-to-commit").status_code == 200
    assert client.post("/fails-mid-transaction").status_code == 500
    backends = postgres.wait_for_backends(1, application_name=app_name)
    assert [b.state for b in backends] == ["idle"]
    assert labels(postgres, table) == []


def test_backends_ended_between_requests_cause_no_failed_request(
    make_app: MakeApp, postgres: PostgresServer, app_name: str
) -> None:
    app, db = make_app(TESTING=False)

    @app.route("/")
    def index() -> str:
        with db.connection() as conn:
            row = conn.execute("SELECT 1").fetchone()
        return str(row[0]) if row else "none"

    client = app.test_client()
    statuses: list[int] = []
    ended = 0
    stop_at = time.monotonic() + 60
    with psycopg.connect(postgres.superuser_conninfo, autocommit=True) as superuser:
        while len(statuses) < 300 and time.monotonic() < stop_at:
            ended += postgres.terminate_backends(application_name=app_name, admin=superuser)
            statuses.append(client.get("/").status_code)
    assert statuses == [200] * 300
    assert ended == 299  # the first request had no backend to end yet
    stats = db.get_pool(app).stats()
    assert stats["connections_opened"] == 300
    assert stats["pool_in_use"] == 0
