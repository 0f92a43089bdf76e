"""Names shared by the Django tests and their conftest."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from awslambdaric.lambda_context import LambdaContext

from serverless_pool.testing.lambda_emulator import http_api_event

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "example_projects" / "django_app"
ENGINE = "django_serverless_pool.backends.postgresql"
APP_NAME = "django-tests"
OTHER_APP_NAME = "django-tests-other"


def lambda_event(path: str, query: str = "") -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) GET, as Lambda hands it to the function."""
    target = f"{path}?{query}" if query else path
    return http_api_event(
        "GET", target, [("Host", "api.example.com"), ("X-Forwarded-Proto", "https")]
    )


def lambda_context(remaining_ms: int = 30_000) -> LambdaContext:
    """The context object awslambdaric itself builds for an invocation."""
    return LambdaContext(
        str(uuid.uuid4()),
        None,
        None,
        int(time.time() * 1000) + remaining_ms,
        "arn:aws:lambda:us-east-1:123456789012:function:tests",
        None,
    )
