"""Management commands run inside the function by a direct invocation, on the emulator.

The witness is the database: after ``migrate`` the tables exist, after
``createsuperuser --noinput`` the user does; an HTTP event never runs one; a command
that is not on the allow-list (or a function that allows none) is refused by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from lambda_testkit import FUNCTIONS, REPO, load_event, wait_until

from serverless_pool.aws_lambda import COMMAND_KEY
from serverless_pool.testing.lambda_emulator import EmulatedFunction, InvocationResult
from serverless_pool.testing.postgres import APP_USER, PostgresServer

EXAMPLES = REPO / "example_projects"


def fresh_database(postgres: PostgresServer, name: str) -> str:
    postgres.execute(f"DROP DATABASE IF EXISTS {name}")
    postgres.execute(f"CREATE DATABASE {name} OWNER {APP_USER}")
    return postgres.url(dbname=name)


def rows(postgres: PostgresServer, dbname: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(postgres.superuser_conninfo, dbname=dbname) as conn:
        return conn.execute(query).fetchall()


def leaked(function: EmulatedFunction, result: InvocationResult) -> list[int]:
    instance = next(i for i in function.instances if i.name == result.instance)

    def counts() -> list[int]:
        return [
            json.loads(line)["LeakedConnections"]
            for line in instance.output().splitlines()
            if line.startswith('{"_aws"') and result.request_id in line
        ]

    # The emulator reads the instance's output on a thread of its own: wait for the line.
    wait_until(lambda: bool(counts()))
    return counts()


@pytest.fixture(scope="module")
def django_site(postgres: PostgresServer) -> Iterator[EmulatedFunction]:
    env = {
        "DATABASE_URL": fresh_database(postgres, "lambda_commands"),
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
        "DJANGO_SUPERUSER_PASSWORD": "a-long-enough-password-1",
    }
    with EmulatedFunction(
        "django_echo_function.wsgi_handler", cwd=FUNCTIONS, env=env, timeout=60
    ) as function:
        yield function


def command(function: EmulatedFunction, argv: list[str] | str) -> InvocationResult:
    return function.invoke({COMMAND_KEY: argv})


def test_django_migrate_createsuperuser_and_check_deploy(
    django_site: EmulatedFunction, postgres: PostgresServer
) -> None:
    migrated = command(django_site, ["migrate", "--noinput"])
    assert migrated.ok, migrated.payload
    assert migrated.payload["exitStatus"] == 0, migrated.payload
    assert migrated.payload["command"] == ["migrate", "--noinput"]
    assert "Applying auth.0001_initial... OK" in migrated.payload["stdout"]
    tables = rows(
        postgres,
        "lambda_commands",
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('auth_user', 'django_migrations')",
    )
    assert tables == [(2,)]
    assert leaked(django_site, migrated) == [0]

    created = command(django_site, "createsuperuser --noinput")
    assert created.payload["exitStatus"] == 0, created.payload
    users = rows(postgres, "lambda_commands", "SELECT username, is_superuser FROM auth_user")
    assert users == [("admin", True)]
    again = command(django_site, "createsuperuser --noinput")
    assert again.payload["exitStatus"] == 1  # Django refuses a duplicate
    assert "already taken" in again.payload["stderr"]

    checked = command(django_site, ["check", "--deploy"])
    assert checked.payload["exitStatus"] == 0, checked.payload
    assert "security.W" in checked.payload["stderr"] + checked.payload["stdout"]
    failing = command(django_site, ["check", "--deploy", "--fail-level", "WARNING"])
    assert failing.payload["exitStatus"] == 1
    assert "SystemCheckError" in failing.payload["stderr"]


def test_commands_outside_the_allow_list_are_refused(django_site: EmulatedFunction) -> None:
    refused = command(django_site, ["flush", "--noinput"])
    assert refused.status == "error"
    assert refused.payload["errorType"] == "PermissionError"
    assert "'flush' is not allowed" in refused.payload["errorMessage"]
    assert "migrate" in refused.payload["errorMessage"]  # says what is allowed
    malformed = command(django_site, [])  # type: ignore[arg-type]
    assert malformed.payload["errorType"] == "ValueError"


def test_a_function_without_an_allow_list_runs_no_command(postgres: PostgresServer) -> None:
    env = {"DATABASE_URL": postgres.url()}
    with EmulatedFunction("django_echo_function.asgi_handler", cwd=FUNCTIONS, env=env) as fn:
        refused = command(fn, ["migrate"])
    assert refused.status == "error"
    assert "management commands are not enabled" in refused.payload["errorMessage"]


def test_an_http_event_never_runs_a_command(django_site: EmulatedFunction) -> None:
    event = load_event("http_api_v2")
    event[COMMAND_KEY] = ["flush", "--noinput"]  # no HTTP source can do this; still
    event.update(rawPath="/echo/x", rawQueryString="", body="", isBase64Encoded=False)
    result = django_site.invoke(event)
    # The payload key is checked before the event's kind: a command payload is a
    # direct invocation, and this one is refused by the allow-list, not run.
    assert result.status == "error"
    assert "'flush' is not allowed" in result.payload["errorMessage"]


def test_the_flask_shop_creates_its_schema_from_a_direct_invocation(
    postgres: PostgresServer,
) -> None:
    url = fresh_database(postgres, "lambda_flask_commands")
    env = {
        "SERVERLESS_POOL_DATABASE_URL": url,
        "SHOP_MANAGEMENT_COMMANDS": "init-db",
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES / "flask_app")]),
    }
    with EmulatedFunction("lambda_handler.handler", cwd=EXAMPLES / "flask_app", env=env) as fn:
        created = command(fn, ["init-db"])
        assert created.ok, created.payload
        assert created.payload["exitStatus"] == 0, created.payload
        assert "tables shop_product and shop_order are ready" in created.payload["stdout"]
        usage = command(fn, ["init-db", "--no-such-option"])
        assert usage.payload["exitStatus"] == 2
        assert "No such option" in usage.payload["stderr"]
    tables = rows(
        postgres,
        "lambda_flask_commands",
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('shop_product', 'shop_order')",
    )
    assert tables == [(2,)]
