"""Fixtures of the Lambda tests (the helpers live in `lambda_testkit`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from awslambdaric.lambda_context import LambdaContext

from serverless_pool.testing.lambda_emulator import lambda_context
from serverless_pool.testing.postgres import PostgresServer


@pytest.fixture
def context_factory() -> Callable[..., LambdaContext]:
    return lambda_context


@pytest.fixture
def db_env(postgres: PostgresServer, app_name: str) -> dict[str, str]:
    """Environment for an emulated function using the shared server, under `app_name`."""
    return {
        "SERVERLESS_POOL_DATABASE_URL": postgres.url(),
        "SERVERLESS_POOL_APPLICATION_NAME": app_name,
    }
