"""``flask serverless-pool``: check, settings, stats; never a password in the output."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import Flask
from flask_serverless_pool import ServerlessPool

from serverless_pool.testing.postgres import PostgresServer

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]
PASSWORD = "app-secret"


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
    assert f"port={postgres.port}" in output
    assert "server version: 15" in output
    assert "max_connections: 100 (reserved: 3" in output
    assert "pool max_size per instance: 2" in output
    assert "instances that fit: " in output
    assert output.rstrip().endswith("ok")


def test_check_fails_when_the_expected_fleet_does_not_fit(make_app: MakeApp) -> None:
    app, _ = make_app(SERVERLESS_POOL_MAX_SIZE=2)
    code, output = run(app, "check", "--instances", "10")
    assert code == 0, output
    assert "ok: 10 instances x max_size 2 fit in 97" in output
    code, output = run(app, "check", "--instances", "1000")
    assert code == 1
    assert "1000 instances x max_size 2 = 2000 connections, more than the 97" in output


def test_check_fails_cleanly_without_showing_the_password(postgres: PostgresServer) -> None:
    app = Flask("flask_cli_wrong_password")
    app.config["SERVERLESS_POOL_DATABASE_URL"] = postgres.conninfo(password="not-" + PASSWORD)
    db = ServerlessPool(app)
    try:
        result = app.test_cli_runner().invoke(args=["serverless-pool", "check"])
    finally:
        db.get_pool(app).close()
    assert result.exit_code == 1
    assert "cannot use the database" in result.output
    assert "password authentication failed" in result.output
    assert PASSWORD not in result.output


def test_settings_shows_values_and_their_source(
    make_app: MakeApp, postgres: PostgresServer
) -> None:
    app, _ = make_app(SERVERLESS_POOL_MAX_IDLE=30)
    code, output = run(app, "settings")
    assert code == 0, output
    assert f"port={postgres.port}" in output
    lines = {line.split()[0]: line for line in output.splitlines() if line}
    assert "30.0" in lines["max_idle"]
    assert "(config)" in lines["max_idle"]
    assert "(default)" in lines["max_lifetime"]
    code, output = run(app, "settings", "--json")
    shown = json.loads(output)
    assert shown["settings"]["max_idle"] == 30.0
    assert shown["sources"]["max_idle"] == "config"


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
