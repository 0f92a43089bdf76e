"""Django for the Django tests only: settings configured when this directory is collected.

pytest-django decides once per session whether Django is configured, so the settings
are configured here, at import, with the database address filled in by
`django_db_modify_db_settings` once the shared server runs. Nothing here changes the
environment or settings of the other areas' tests. The example project is appended to
``sys.path`` (not prepended) so its modules never shadow anything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from serverless_pool.testing.postgres import APP_DATABASE, APP_PASSWORD, APP_USER, PostgresServer

sys.path.append(str(Path(__file__).resolve().parent))
from django_testkit import APP_NAME, ENGINE, EXAMPLE, HERE, OTHER_APP_NAME

for path in (str(HERE), str(EXAMPLE)):
    if path not in sys.path:
        sys.path.append(path)


def _database(**extra: Any) -> dict[str, Any]:
    return {
        "ENGINE": ENGINE,
        "NAME": APP_DATABASE,
        "USER": APP_USER,
        "PASSWORD": APP_PASSWORD,
        "HOST": "127.0.0.1",
        "PORT": "",  # the shared server's port, set by django_db_modify_db_settings
        **extra,
    }


if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-tests",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["django.contrib.contenttypes", "django_serverless_pool", "shop"],
        MIDDLEWARE=["django_serverless_pool.middleware.ServerlessPoolMiddleware"],
        ROOT_URLCONF="djtest_urls",
        DATABASES={
            "default": _database(),
            "other": _database(
                TEST={"NAME": "test_app_other"},
                SERVERLESS_POOL={"max_size": 2, "application_name": OTHER_APP_NAME},
            ),
        },
        SERVERLESS_POOL={"application_name": APP_NAME, "max_size": 4},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgres: PostgresServer) -> None:
    """Point every alias at the shared server; the role may create test databases."""
    postgres.execute(f"ALTER ROLE {APP_USER} CREATEDB")
    from django.db import connections

    for alias in settings.DATABASES:
        settings.DATABASES[alias]["PORT"] = str(postgres.port)
        connections.settings[alias]["PORT"] = str(postgres.port)


@pytest.fixture
def pools_closed_after() -> Iterator[None]:
    """Close every pool after the test (for tests that change pool settings)."""
    yield
    from django_serverless_pool.backends.postgresql.pools import close_pools

    close_pools()
