"""Names shared by the Django tests and their conftest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
