"""Helpers of the managed-PostgreSQL tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from serverless_pool.testing.postgres import APP_DATABASE, PostgresServer


def rds_secret(server: PostgresServer, user: str, password: str, **extra: Any) -> str:
    """A SecretString in the format RDS and its rotation functions use."""
    value = {
        "engine": "postgres",
        "host": server.host,
        "port": server.port,
        "username": user,
        "password": password,
        "dbname": APP_DATABASE,
        **extra,
    }
    return json.dumps(value)
