"""The three check commands speak with one voice: ``serverless-pool check``, ``manage.py
serverless_pool check`` and ``flask serverless-pool check``, run as users run them (each
in a process of its own) on the same database with the same settings, find the same
problems in the same words, and print the same JSON schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cli_subprocess import clean_env, run_cli

from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

#: The same pool settings for all three: a fleet that does not fit, and a timeout of 0.
SETTINGS = {"max_size": 2, "idle_session_timeout": 0}
ENVIRONMENTS = 50


def _run(argv: list[str], cwd: Path, **env: str) -> dict[str, Any]:
    environ = clean_env(**env)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the fleet does not fit
    assert APP_PASSWORD not in proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def core_report(postgres: PostgresServer) -> dict[str, Any]:
    result = run_cli(
        "check",
        "--url",
        postgres.url(),
        "--max-size",
        str(SETTINGS["max_size"]),
        "--idle-session-timeout",
        str(SETTINGS["idle_session_timeout"]),
        "--expected-environments",
        str(ENVIRONMENTS),
        "--json",
    )
    assert result.code == 1, result.output
    report: dict[str, Any] = json.loads(result.out)
    return report


def django_report(postgres: PostgresServer, tmp_path: Path) -> dict[str, Any]:
    database = {
        "ENGINE": "django_serverless_pool.backends.postgresql",
        "NAME": "app",
        "USER": "app",
        "PASSWORD": APP_PASSWORD,
        "HOST": postgres.host,
        "PORT": str(postgres.port),
    }
    (tmp_path / "agree_settings.py").write_text(
        f"SECRET_KEY = 'agree'\n"
        f"INSTALLED_APPS = ['django.contrib.contenttypes', 'django_serverless_pool']\n"
        f"MIDDLEWARE = ['django_serverless_pool.middleware.ServerlessPoolMiddleware']\n"
        f"DATABASES = {{'default': {database!r}}}\n"
        f"SERVERLESS_POOL = {{**{SETTINGS!r}, 'expected_concurrency': {ENVIRONMENTS}}}\n"
    )
    argv = ["-m", "django", "serverless_pool", "check", "--json"]
    return _run(argv, tmp_path, DJANGO_SETTINGS_MODULE="agree_settings")


def flask_report(postgres: PostgresServer, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "agree_app.py").write_text(
        "from flask import Flask\n"
        "from flask_serverless_pool import ServerlessPool\n"
        "app = Flask(__name__)\n"
        "app.config['SERVERLESS_POOL_NAME'] = 'default'\n"
        f"app.config['SERVERLESS_POOL_MAX_SIZE'] = {SETTINGS['max_size']}\n"
        f"app.config['SERVERLESS_POOL_IDLE_SESSION_TIMEOUT'] = {SETTINGS['idle_session_timeout']}\n"
        "db = ServerlessPool(app)\n"
    )
    argv = ["-m", "flask", "--app", "agree_app", "serverless-pool", "check", "--json"]
    argv += ["--environments", str(ENVIRONMENTS)]
    return _run(argv, tmp_path, SERVERLESS_POOL_DATABASE_URL=postgres.url())


def test_the_three_check_commands_find_the_same_problems_in_the_same_words(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    reports = {
        "core": core_report(postgres),
        "django": django_report(postgres, tmp_path),
        "flask": flask_report(postgres, tmp_path),
    }
    problems = {name: report["problems"] for name, report in reports.items()}
    assert problems["core"] == [
        {
            "database": "default",
            "level": "error",
            "code": "budget",
            "message": "the fleet needs 100 connections (max_size 2 x 1 worker per"
            " environment x 50 environments), the server allows 97",
            "hint": problems["core"][0]["hint"],
        },
        {
            "database": "default",
            "level": "warning",
            "code": "idle-session-timeout",
            "message": "idle_session_timeout is 0: an instance that Lambda freezes keeps its"
            " server slot until the server or the network ends the session",
            "hint": problems["core"][1]["hint"],
        },
    ]
    assert problems["django"] == problems["core"]
    assert problems["flask"] == problems["core"]


def test_the_three_check_commands_print_the_same_json_schema(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    reports = [
        core_report(postgres),
        django_report(postgres, tmp_path),
        flask_report(postgres, tmp_path),
    ]

    def schema(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: schema(v) for k, v in value.items()}
        if isinstance(value, list):
            return [schema(v) for v in value[:1]]
        return type(value).__name__ if value is not None else "null"

    core, django, flask = (schema(r) for r in reports)
    assert django == core
    assert flask == core
    fleets = [r["databases"][0]["fleet"] for r in reports]
    assert fleets[1] == fleets[0] == fleets[2]
