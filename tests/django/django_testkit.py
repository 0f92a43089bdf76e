"""Names shared by the Django tests and their conftest."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "example_projects" / "django_app"
ENGINE = "django_serverless_pool.backends.postgresql"
APP_NAME = "django-tests"
OTHER_APP_NAME = "django-tests-other"
