"""The example projects on the emulator: every event source, `curl`, and their SAM
templates validated offline with cfn-lint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_testkit import FUNCTIONS, REPO, decode_response, load_event, retarget

from serverless_pool.testing.lambda_emulator import EmulatedFunction, HttpFront, LambdaInstance
from serverless_pool.testing.postgres import APP_PASSWORD, APP_USER, PostgresServer

EXAMPLES = REPO / "example_projects"
SOURCES = [
    "alb",
    "alb_multi_value",
    "api_gateway_rest_v1",
    "function_url",
    "http_api_v1",
    "http_api_v2",
]


def _database(postgres: PostgresServer, name: str) -> str:
    postgres.execute(f"DROP DATABASE IF EXISTS {name}")
    postgres.execute(f"CREATE DATABASE {name} OWNER {APP_USER}")
    return postgres.url(dbname=name)


def _setup(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(
        argv, cwd=cwd, env={**os.environ, **env}, check=True, timeout=120,
        capture_output=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def flask_shop(postgres: PostgresServer) -> Iterator[EmulatedFunction]:
    url = _database(postgres, "lambda_flask_shop")
    env = {"SERVERLESS_POOL_DATABASE_URL": url, "SERVERLESS_POOL_APPLICATION_NAME": "lambda-flask"}
    cwd = EXAMPLES / "flask_app"
    _setup([sys.executable, "-m", "flask", "--app", "flask_shop", "init-db"], cwd, env)
    with EmulatedFunction("lambda_handler.handler", cwd=cwd, env=env) as function:
        yield function


@pytest.fixture(scope="module")
def django_env(postgres: PostgresServer) -> dict[str, str]:
    env = {
        "DATABASE_URL": _database(postgres, "lambda_django_shop"),
        "DJANGO_SETTINGS_MODULE": "shopsite.settings",
        "SERVERLESS_POOL_APPLICATION_NAME": "lambda-django",
    }
    _setup([sys.executable, "manage.py", "migrate", "--no-input"], EXAMPLES / "django_app", env)
    return env


@pytest.fixture(scope="module")
def django_shop(django_env: dict[str, str]) -> Iterator[EmulatedFunction]:
    cwd = EXAMPLES / "django_app"
    with EmulatedFunction("lambda_handler.handler", cwd=cwd, env=django_env) as function:
        yield function


@pytest.fixture(scope="module")
def django_asgi_shop(django_env: dict[str, str]) -> Iterator[EmulatedFunction]:
    """The same project through Django's ASGI application and Mangum."""
    path = os.pathsep.join([str(FUNCTIONS), str(EXAMPLES / "django_app")])
    env = {**django_env, "PYTHONPATH": path}
    with EmulatedFunction("django_asgi_function.handler", cwd=FUNCTIONS, env=env) as function:
        yield function


@pytest.fixture(params=["flask", "django", "django_asgi"])
def shop(request: pytest.FixtureRequest) -> tuple[str, EmulatedFunction]:
    function: EmulatedFunction = request.getfixturevalue(f"{request.param}_shop")
    return str(request.param), function


def invoke(function: EmulatedFunction, event: dict[str, Any]) -> tuple[int, Any]:
    result = function.invoke(event)
    assert result.ok, result.payload
    status, _headers, body = decode_response(result.payload)
    return status, json.loads(body)


@pytest.mark.parametrize("source", SOURCES)
def test_every_event_source_reaches_the_shop(
    shop: tuple[str, EmulatedFunction], source: str
) -> None:
    kind, function = shop
    event = load_event(source)
    status, body = invoke(function, retarget(event, "GET", "/health"))
    assert (status, body) == (200, {"database": True})
    name = f"widget via {source} on {kind}"
    product = json.dumps({"name": name, "price_cents": 250}).encode()
    status, created = invoke(
        function, retarget(event, "POST", "/products", product, "application/json")
    )
    assert status == 201, created
    status, fetched = invoke(function, retarget(event, "GET", f"/products/{created['id']}"))
    assert status == 200
    assert fetched["name"] == name


def test_the_shop_answers_curl(shop: tuple[str, EmulatedFunction]) -> None:
    _kind, function = shop
    with HttpFront(function) as front:
        out = subprocess.run(
            ["curl", "-sS", "--fail", f"{front.url}/health"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    assert json.loads(out.stdout) == {"database": True}
    logs = "".join(instance.output() for instance in function.instances)
    assert APP_PASSWORD not in logs


def test_sam_templates_pass_cfn_lint(tmp_path: Path) -> None:
    templates = [EXAMPLES / name / "template.yaml" for name in ("flask_app", "django_app")]
    # A copy with a resource that breaks CloudFormation's own resource schema shows the
    # linter does check (one run: it is slow). Both faults are invalid by the schema in
    # every cfn-lint release we allow: a property the resource type does not have (E3002)
    # and a list where the schema wants a number (E3012). A value such as a runtime name
    # would not do: a newer release may learn to accept it.
    broken = tmp_path / "broken.yaml"
    text = templates[0].read_text()
    assert text.count("\nResources:\n") == 1
    broken.write_text(
        text.replace(
            "\nResources:\n",
            "\nResources:\n"
            "  BrokenQueue:\n"
            "    Type: AWS::SQS::Queue\n"
            "    Properties:\n"
            "      NoSuchQueueProperty: 1\n"
            "      DelaySeconds: [not, a, number]\n",
        )
    )
    script = Path(sys.executable).with_name("cfn-lint")
    lint = [str(script) if script.exists() else "cfn-lint"]
    out = subprocess.run(
        [*lint, "--format", "parseable", *map(str, templates), str(broken)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = out.stdout + out.stderr
    assert out.returncode != 0
    # parseable: one finding per line, "path:line:column:line:column:rule:message"
    found = set()
    for line in report.splitlines():
        if line.startswith(f"{broken}:"):
            parts = line[len(str(broken)) + 1 :].split(":")
            found.add((int(parts[0]), parts[4]))
    lines = broken.read_text().splitlines()
    property_line = next(i for i, s in enumerate(lines, 1) if "NoSuchQueueProperty" in s)
    assert (property_line, "E3002") in found, report
    assert (property_line + 1, "E3012") in found, report
    for template in templates:
        assert str(template) not in report, report


@pytest.mark.parametrize("connect_on_init", [False, True])
def test_connect_on_init_opens_django_s_pool_in_the_init_phase(
    django_env: dict[str, str], postgres: PostgresServer, connect_on_init: bool
) -> None:
    """Django builds its pool per alias at the first query; with connect_on_init the
    handler builds and connects it during init, so the first request finds it open."""
    app_name = f"lambda-django-init-{int(connect_on_init)}"
    env = {
        **django_env,
        "SERVERLESS_POOL_APPLICATION_NAME": app_name,
        "SHOP_CONNECT_ON_INIT": "1" if connect_on_init else "",
    }
    with LambdaInstance("lambda_handler.handler", cwd=EXAMPLES / "django_app", env=env) as one:
        one.start()
        after_init = postgres.backends(application_name=app_name)
        assert len(after_init) == (1 if connect_on_init else 0)
        first = one.invoke(retarget(load_event("http_api_v2"), "GET", "/health"))
        assert first.ok, first.payload
        assert first.cold_start
        assert first.connections_opened == (0 if connect_on_init else 1)
        assert len(postgres.backends(application_name=app_name)) == 1
