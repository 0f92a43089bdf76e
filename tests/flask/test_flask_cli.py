"""``flask serverless-pool``: check, settings, stats; never a password in the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from flask_serverless_pool import ServerlessPool

from serverless_pool.testing.postgres import PostgresServer

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]
PASSWORD = "app-secret"
WRONG = "not-the-password-81"


def run(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["serverless-pool", *args])
    assert PASSWORD not in result.output
    return result.exit_code, result.output


def test_the_group_is_registered_with_its_commands(make_app: MakeApp) -> None:
    app, _ = make_app()
    code, output = run(app, "--help")
    assert code == 0
    for command in ("check", "settings", "stats"):
        assert command in output


def test_check_reports_the_server_and_its_connection_budget(
    make_app: MakeApp, postgres: PostgresServer
) -> None:
    app, _ = make_app(SERVERLESS_POOL_MAX_SIZE=2)
    code, output = run(app, "check")
    assert code == 0, output
    assert f"host=127.0.0.1 port={postgres.port} dbname=app user=app" in output
    assert "  server:   PostgreSQL 15" in output
    assert "    max_connections             100" in output
    assert "    max_size                             2" in output
    assert "up to 48 environments fit in 97 usable slots" in output
    assert output.splitlines()[-1] == "result:   ok"


def test_check_fails_when_the_expected_fleet_does_not_fit(make_app: MakeApp) -> None:
    app, _ = make_app(SERVERLESS_POOL_MAX_SIZE=2)
    code, output = run(app, "check", "--environments", "10")
    assert code == 0, output
    assert "fits: max_size 2 x 1 worker per environment x 10 environments = 20" in output
    code, output = run(app, "check", "--instances", "1000", "--workers-per-environment", "3")
    assert code == 1
    assert (
        "[budget] the fleet needs 6000 connections (max_size 2 x 3 workers per environment"
        " x 1000 environments), the server allows 97" in output
    )


def test_a_failed_check_names_the_host_user_and_database_but_not_the_password(
    postgres: PostgresServer,
) -> None:
    app = Flask("flask_cli_wrong_password")
    app.config["SERVERLESS_POOL_DATABASE_URL"] = postgres.conninfo(password=WRONG)
    db = ServerlessPool(app)
    try:
        result = app.test_cli_runner().invoke(args=["serverless-pool", "check"])
    finally:
        db.get_pool(app).close()
    assert result.exit_code == 1
    assert "[cannot-connect] cannot connect: the pool 'flask_cli_wrong_password'" in result.output
    assert f'connection to server at "127.0.0.1", port {postgres.port} failed' in result.output
    assert 'password authentication failed for user "app"' in result.output
    assert "…" not in result.output
    assert WRONG not in result.output


def test_a_bad_environment_value_is_one_line_not_a_traceback(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    (tmp_path / "newcomer_app.py").write_text(
        "from flask import Flask\n"
        "from flask_serverless_pool import ServerlessPool\n"
        "app = Flask(__name__)\n"
        "db = ServerlessPool(app)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SERVERLESS_POOL_")},
        "SERVERLESS_POOL_DATABASE_URL": postgres.url(),
        "SERVERLESS_POOL_MAX_SIZE": "lots",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "newcomer_app", "serverless-pool", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "Error: serverless-pool settings: environment variable SERVERLESS_POOL_MAX_SIZE:"
        " expected a whole number, got 'lots'"
    )


def test_check_warns_about_idle_session_timeout_0_like_every_check(make_app: MakeApp) -> None:
    app, _ = make_app(SERVERLESS_POOL_IDLE_SESSION_TIMEOUT=0)
    code, output = run(app, "check")
    assert code == 0, output
    assert "warning:  [idle-session-timeout] idle_session_timeout is 0" in output


def test_settings_shows_values_and_their_source(
    make_app: MakeApp, postgres: PostgresServer
) -> None:
    app, _ = make_app(SERVERLESS_POOL_MAX_IDLE=30)
    code, output = run(app, "settings")
    assert code == 0, output
    assert f"port={postgres.port}" in output
    rows = {line.split()[0]: line.split()[1:] for line in output.splitlines()[2:]}
    assert rows["max_idle"] == ["30", "config", "SERVERLESS_POOL_MAX_IDLE"]
    assert rows["max_lifetime"] == ["3600", "default"]
    assert rows["name"][1:] == ["the", "app's", "name"]
    code, output = run(app, "settings", "--json")
    shown = {row["name"]: row for row in json.loads(output)["settings"]}
    assert shown["max_idle"] == {
        "name": "max_idle",
        "value": 30.0,
        "source": "config SERVERLESS_POOL_MAX_IDLE",
    }


def test_stats_shows_the_counters(make_app: MakeApp) -> None:
    app, _ = make_app()
    run(app, "check")
    code, output = run(app, "stats", "--json")
    assert code == 0, output
    counts = json.loads(output)
    assert counts["borrows"] == 1
    assert counts["pool_in_use"] == 0
    code, output = run(app, "stats")
    assert "connections_opened: 1" in output
