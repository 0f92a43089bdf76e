"""What a new user gets wrong, caught as they would run it: ``python -m django check`` and
friends in a project of their own, in a process of its own.

Each test here failed before its fix: the checks were silently off without the app in
``INSTALLED_APPS``, ``check --database`` said "no issues" for a database it could not
use, ``make_handler`` checked nothing, and messages ended in "?.".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django_project import MIDDLEWARE, database, run_django, run_python, settings_for

from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

WRONG = "not-the-password-81"


def test_without_the_app_the_engine_still_runs_the_checks_and_says_so(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    settings = settings_for(
        postgres,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        DATABASES={"default": database(postgres, CONN_MAX_AGE=60)},
    )
    ran = run_django(tmp_path, settings, "check")
    assert ran.code == 1, ran.output
    assert "serverless_pool.E004" in ran.err
    assert 'DATABASES["default"]["CONN_MAX_AGE"] is 60' in ran.err
    assert "serverless_pool.W003" in ran.err
    assert "django_serverless_pool is not in INSTALLED_APPS" in ran.err


def test_conn_health_checks_is_reported_as_doing_nothing(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    settings = settings_for(
        postgres, DATABASES={"default": database(postgres, CONN_HEALTH_CHECKS=True)}
    )
    ran = run_django(tmp_path, settings, "check", "--fail-level", "WARNING")
    assert ran.code == 1, ran.output
    assert "serverless_pool.W004" in ran.err
    assert "has no effect with this ENGINE" in ran.err


def test_the_middleware_after_database_middleware_is_reported(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    middleware = [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        MIDDLEWARE,
    ]
    ran = run_django(tmp_path, settings_for(postgres, MIDDLEWARE=middleware), "check")
    assert ran.code == 0, ran.output
    assert "serverless_pool.W005" in ran.err
    # The security middleware never queries: only the two that may are named.
    assert (
        "comes after django.contrib.sessions.middleware.SessionMiddleware,"
        " django.contrib.auth.middleware.AuthenticationMiddleware" in ran.err
    )
    first = [MIDDLEWARE, *middleware[:-1]]
    ran = run_django(tmp_path, settings_for(postgres, MIDDLEWARE=first), "check")
    assert "W005" not in ran.err, ran.output


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"PASSWORD": WRONG}, 'password authentication failed for user "app"'),
        ({"PORT": "1"}, "server unreachable"),
        ({"NAME": "no_such_database"}, 'database "no_such_database" does not exist'),
    ],
    ids=["wrong password", "unreachable host", "unknown database"],
)
def test_check_database_fails_with_the_reason_when_the_database_cannot_be_used(
    tmp_path: Path, postgres: PostgresServer, change: dict[str, str], reason: str
) -> None:
    settings = settings_for(postgres, DATABASES={"default": database(postgres, **change)})
    ran = run_django(tmp_path, settings, "check", "--database", "default")
    assert ran.code == 1, ran.output
    assert "serverless_pool.E007" in ran.err
    assert reason in ran.err
    assert WRONG not in ran.output
    assert APP_PASSWORD not in ran.output
    # Without --database, nothing connects (as Django's own database checks).
    assert run_django(tmp_path, settings, "check").code == 0


def test_check_database_with_a_fleet_gives_the_reason_it_cannot_read_the_budget(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    settings = settings_for(
        postgres,
        DATABASES={"default": database(postgres, PASSWORD=WRONG)},
        SERVERLESS_POOL={"expected_concurrency": 10},
    )
    ran = run_django(tmp_path, settings, "check", "--database", "default")
    assert ran.code == 1, ran.output
    assert "password authentication failed" in ran.err
    assert "could not read the connection budget" not in ran.err


def test_check_messages_end_with_one_mark(tmp_path: Path, postgres: PostgresServer) -> None:
    ran = run_django(tmp_path, settings_for(postgres, SERVERLESS_POOL={"max_szie": 2}), "check")
    assert ran.code == 1
    assert "did you mean 'max_size'?" in ran.err
    assert "?." not in ran.err


def test_make_handler_logs_the_configuration_problems_once_at_init(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    settings = settings_for(
        postgres,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        DATABASES={"default": database(postgres, CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True)},
        ROOT_URLCONF=[],
    )
    ran = run_python(
        tmp_path,
        settings,
        """
        from django.core.wsgi import get_wsgi_application
        from serverless_pool.aws_lambda import make_handler
        handler = make_handler(get_wsgi_application())
        print("made")
        """,
    )
    assert ran.code == 0, ran.output
    assert ran.out.strip() == "made"
    logged = ran.err.splitlines()
    assert [line for line in logged if "serverless_pool.E004" in line] == [
        'configuration error [serverless_pool.E004]: DATABASES["default"]["CONN_MAX_AGE"] is'
        " 60, but the pool already keeps connections (remove CONN_MAX_AGE (or set it to 0);"
        " use SERVERLESS_POOL's max_idle and max_lifetime instead)"
    ]
    assert any("serverless_pool.W004" in line for line in logged)
    assert any("serverless_pool.W003" in line for line in logged)
