"""Fixtures of the Lambda tests (the helpers live in `lambda_testkit`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from awslambdaric.lambda_context import LambdaContext
from lambda_testkit import make_context

from serverless_pool.testing.postgres import PostgresServer


@pytest.fixture
def context_factory() -> Callable[..., LambdaContext]:
    return make_context


@pytest.fixture
def db_env(postgres: PostgresServer, app_name: str) -> dict[str, str]:
    """Environment for an emulated function using the shared server, under `app_name`."""
    return {
        "SERVERLESS_POOL_DATABASE_URL": postgres.url(),
        "SERVERLESS_POOL_APPLICATION_NAME": app_name,
    }
