"""Fixtures for the Flask extension's tests: real Flask apps on the shared server."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask_serverless_pool import ServerlessPool

from serverless_pool.testing.postgres import PostgresServer

_apps = itertools.count()

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]


@pytest.fixture
def make_app(postgres: PostgresServer, app_name: str) -> Iterator[MakeApp]:
    """Build Flask apps with the extension against the shared server; pools are closed
    after the test. Keyword arguments are Flask config keys.
    """
    made: list[tuple[Flask, ServerlessPool]] = []

    def make(db: ServerlessPool | None = None, **config: Any) -> tuple[Flask, ServerlessPool]:
        app = Flask(f"flask_test_app_{next(_apps)}")
        app.config["TESTING"] = True
        app.config["SERVERLESS_POOL_DATABASE_URL"] = postgres.conninfo()
        app.config["SERVERLESS_POOL_APPLICATION_NAME"] = app_name
        app.config.update(config)
        db = db or ServerlessPool()
        db.init_app(app)
        made.append((app, db))
        return app, db

    yield make
    for app, db in made:
        db.get_pool(app).close()
