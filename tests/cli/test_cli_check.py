"""``serverless-pool check``: the server, the settings, the budget; exit codes 0/1/2."""

from __future__ import annotations

import json
import shutil
import subprocess

from cli_subprocess import clean_env, run_cli

from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

SECRET = "s3cret-not-for-logs"


def test_check_prints_the_server_target_and_budget_and_passes(postgres: PostgresServer) -> None:
    result = run_cli("check", "--url", postgres.url())
    assert result.code == 0, result.output
    version = postgres.execute("SHOW server_version")[0][0]
    assert f"  server:   PostgreSQL {version}" in result.out
    assert f"database 'default': host=127.0.0.1 port={postgres.port} dbname=app user=app" in (
        result.out
    )
    assert "    max_connections             100" in result.out
    assert "    reserved (superuser)        3" in result.out
    assert "    usable slots                97" in result.out
    assert result.out.splitlines()[-1] == "result:   ok"
    assert APP_PASSWORD not in result.output


def test_check_shows_the_effective_settings_with_their_sources(postgres: PostgresServer) -> None:
    env = clean_env(SERVERLESS_POOL_MAX_IDLE="30")
    result = run_cli("check", "--url", postgres.url(), "--max-size", "2", env=env)
    assert result.code == 0, result.output
    lines = result.out.splitlines()
    assert any(line.split() == ["max_size", "2", "argument", "--max-size"] for line in lines)
    assert any(
        line.split() == ["max_idle", "30", "environment", "SERVERLESS_POOL_MAX_IDLE"]
        for line in lines
    )
    assert any(line.split() == ["min_size", "0", "default"] for line in lines)


def test_check_says_how_many_environments_fit_at_this_max_size(postgres: PostgresServer) -> None:
    result = run_cli("check", "--url", postgres.url(), "--max-size", "4")
    assert result.code == 0, result.output
    assert (
        "at max_size 4 x 1 worker per environment = 4 connections per environment, up to 24"
        " environments fit in 97 usable slots" in result.out
    )


def test_a_fleet_that_fits_the_budget_passes(postgres: PostgresServer) -> None:
    result = run_cli(
        "check", "--url", postgres.url(), "--max-size", "1", "--expected-instances", "90"
    )
    assert result.code == 0, result.output
    assert (
        "fits: max_size 1 x 1 worker per environment x 90 environments = 90 connections"
        " <= 97 usable slots" in result.out
    )


def test_a_fleet_that_does_not_fit_the_budget_exits_1(postgres: PostgresServer) -> None:
    result = run_cli(
        "check", "--url", postgres.url(), "--max-size", "2", "--expected-instances", "50"
    )
    assert result.code == 1, result.output
    assert (
        "DOES NOT FIT: max_size 2 x 1 worker per environment x 50 environments = 100"
        " connections > 97" in result.out
    )
    assert "error:    [budget] the fleet needs 100 connections" in result.out
    assert result.out.splitlines()[-1] == "result:   FAILED (1 error)"


def test_the_url_comes_from_the_environment_when_not_given(postgres: PostgresServer) -> None:
    env = clean_env(SERVERLESS_POOL_DATABASE_URL=postgres.conninfo())
    result = run_cli("check", env=env)
    assert result.code == 0, result.output
    assert f"port={postgres.port}" in result.out
    assert APP_PASSWORD not in result.output


def test_a_wrong_password_exits_1_and_is_never_printed(postgres: PostgresServer) -> None:
    result = run_cli("check", "--url", postgres.url(password=SECRET))
    assert result.code == 1, result.output
    assert "error:    [cannot-connect] cannot connect: the pool 'default' could not" in result.out
    assert "wrong password or user" in result.out
    assert 'password authentication failed for user "app"' in " ".join(result.out.split())
    assert SECRET not in result.output


def test_an_unreachable_server_exits_1(postgres: PostgresServer) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:1/app?connect_timeout=2"
    result = run_cli("check", "--url", url)
    assert result.code == 1, result.output
    assert "server unreachable" in result.out
    assert SECRET not in result.output


def test_no_database_given_is_bad_input() -> None:
    result = run_cli("check")
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "serverless-pool check: error: no database given:"
        " pass --url or set SERVERLESS_POOL_DATABASE_URL"
    ]


def test_a_malformed_connection_string_is_bad_input_without_echoing_it() -> None:
    result = run_cli("check", "--url", f"host=127.0.0.1 password={SECRET} colour=blue")
    assert result.code == 2
    assert "a parameter name libpq does not know" in result.err
    assert "colour" not in result.err  # it may be half of a password with a space in it
    assert SECRET not in result.output


def test_a_setting_out_of_range_names_its_option() -> None:
    result = run_cli("check", "--url", "postgresql://app@127.0.0.1/app", "--max-size", "0")
    assert result.code == 2
    assert result.err.strip() == (
        "serverless-pool check: error: --max-size: must be at least 1, got '0'"
    )


def test_a_bad_environment_variable_names_the_variable() -> None:
    env = clean_env(SERVERLESS_POOL_PROXY_MODE="pgpool")
    result = run_cli("check", "--url", "postgresql://app@127.0.0.1/app", env=env)
    assert result.code == 2
    assert "SERVERLESS_POOL_PROXY_MODE" in result.err
    assert "'direct', 'pgbouncer-transaction', 'rds-proxy'" in result.err


def test_rds_proxy_mode_lists_what_would_pin_a_session(postgres: PostgresServer) -> None:
    result = run_cli("check", "--url", postgres.url(), "--proxy-mode", "rds-proxy")
    assert result.code == 0, result.output
    verdicts = {
        line[4:24].strip(): line[24:35].strip()
        for line in result.out.splitlines()
        if line.startswith("    ") and line[24:35].strip() in {"ok", "PINS", "your code"}
    }
    assert verdicts == {
        "startup options": "ok",
        "session SET": "ok",
        "deadline bound": "your code",
        "prepared statements": "ok",
        "temporary tables": "your code",
        "advisory locks": "your code",
        "session reset": "ok",
    }


def test_rds_proxy_mode_with_a_deadline_function_bounds_statements_without_pinning(
    postgres: PostgresServer,
) -> None:
    result = run_cli(
        "check", "--url", postgres.url(), "--proxy-mode", "rds-proxy",
        "--deadline-function", "ops.bound_statement",
    )  # fmt: skip
    assert result.code == 0, result.output
    line = next(line for line in result.out.splitlines() if "deadline bound" in line)
    assert line.split()[2:4] == ["ok", "deadline_function=ops.bound_statement:"]


def test_rds_proxy_mode_fails_on_settings_that_pin(postgres: PostgresServer) -> None:
    result = run_cli(
        "check",
        "--url",
        postgres.conninfo(options="-c search_path=public"),
        "--proxy-mode",
        "rds-proxy",
        "--prepare-threshold",
        "5",
        "--statement-timeout",
        "30",
    )
    assert result.code == 1, result.output
    assert result.out.splitlines()[-1] == "result:   FAILED (2 errors, 1 warning)"
    pinned = [
        line.split("PINS")[0].strip()
        for line in result.out.splitlines()
        if "PINS" in line and not line.strip().startswith(("error:", "hint:"))
    ]
    assert pinned == ["startup options", "prepared statements"]
    # A setting that needs session state is not applied behind the proxy: said plainly.
    assert (
        "warning:  [session-state-behind-proxy] statement_timeout=30 is not applied with"
        " proxy_mode=rds-proxy" in result.out
    )
    assert APP_PASSWORD not in result.output


def test_a_session_reset_behind_a_proxy_is_refused_naming_both_settings() -> None:
    result = run_cli(
        "check", "--url", "postgresql://app@127.0.0.1/app",
        "--proxy-mode", "pgbouncer-transaction", "--reset-on-return", "always",
    )  # fmt: skip
    assert result.code == 2
    assert "reset_on_return='always' (option --reset-on-return)" in result.err
    assert "proxy_mode='pgbouncer-transaction' (option --proxy-mode)" in result.err


def test_the_console_script_runs_the_same_command(postgres: PostgresServer) -> None:
    script = shutil.which("serverless-pool")
    assert script is not None, "the serverless-pool console script is not installed"
    proc = subprocess.run(
        [script, "check", "--url", postgres.url()],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "result:   ok"
    assert APP_PASSWORD not in proc.stdout + proc.stderr


def test_every_worker_of_a_managed_instances_environment_is_counted(
    postgres: PostgresServer,
) -> None:
    args = ("check", "--url", postgres.url(), "--max-size", "1", "--expected-environments", "8")
    result = run_cli(*args, "--workers-per-environment", "16")
    assert result.code == 1, result.output
    assert (
        "DOES NOT FIT: max_size 1 x 16 workers per environment x 8 environments = 128"
        " connections > 97 usable slots" in result.out
    )
    # Inside an environment, the runtime's own variable says how many workers there are.
    result = run_cli(*args, env=clean_env(AWS_LAMBDA_MAX_CONCURRENCY="12"))
    assert result.code == 0, result.output
    assert "max_size 1 x 12 workers per environment x 8 environments = 96" in result.out


def test_a_fleet_is_counted_with_lambdas_default_max_size(postgres: PostgresServer) -> None:
    result = run_cli("check", "--url", postgres.url(), "--expected-instances", "90")
    assert result.code == 0, result.output
    assert "fits: max_size 1 x 1 worker per environment x 90 environments" in result.out
    assert "(max_size 1 is its default on Lambda (4 here))" in result.out


def test_the_session_shows_what_the_server_applies(postgres: PostgresServer) -> None:
    env = clean_env(
        AWS_LAMBDA_FUNCTION_NAME="orders",
        SERVERLESS_POOL_STATEMENT_TIMEOUT="2.5",
        SERVERLESS_POOL_PREPARE_THRESHOLD="3",
    )
    result = run_cli("check", "--url", postgres.url(), "--json", env=env)
    assert result.code == 0, result.output
    (database,) = json.loads(result.out)["databases"]
    assert database["session"] == {
        "role": "app",
        "TimeZone": postgres.execute("SHOW TimeZone")[0][0],
        "application_name": "serverless-pool",
        "statement_timeout": "2500ms",
        "idle_in_transaction_session_timeout": "0",
        "idle_session_timeout": "15min",  # the Lambda default, set at connect time
        "prepare_threshold": 3,  # psycopg's, on the connection the check borrowed
        "autocommit": True,
    }


def test_idle_session_timeout_0_set_on_purpose_is_a_warning(postgres: PostgresServer) -> None:
    result = run_cli("check", "--url", postgres.url(), "--idle-session-timeout", "0")
    assert result.code == 0, result.output
    assert "warning:  [idle-session-timeout] idle_session_timeout is 0" in result.out
    assert result.out.splitlines()[-1] == "result:   ok (1 warning)"
    # Left to its default off Lambda (0 here, 900 there), nothing is said.
    assert "idle-session-timeout" not in run_cli("check", "--url", postgres.url()).out


def test_json_report_has_the_shared_schema(postgres: PostgresServer) -> None:
    result = run_cli(
        "check", "--url", postgres.url(), "--max-size", "2", "--expected-instances", "50", "--json"
    )
    assert result.code == 1, result.output
    report = json.loads(result.out)
    assert report["ok"] is False
    assert [(p["database"], p["level"], p["code"]) for p in report["problems"]] == [
        ("default", "error", "budget")
    ]
    (database,) = report["databases"]
    assert database["fleet"] == {
        "max_size": 2,
        "workers_per_environment": 1,
        "environments": 50,
        "connections_per_environment": 2,
        "note": "",
        "connections": 100,
        "fits": False,
        "environments_that_fit": 48,
    }
    assert database["budget"]["usable"] == 97
    assert {row["name"]: row["source"] for row in database["settings"]}["max_size"] == (
        "argument --max-size"
    )
    assert APP_PASSWORD not in result.output
