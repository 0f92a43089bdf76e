"""``serverless-pool settings`` and the command line's own behaviour."""

from __future__ import annotations

import subprocess
import sys

from cli_subprocess import clean_env, run_cli

from serverless_pool.settings import SCHEMA


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:1] != " "}


def test_every_setting_is_listed_with_its_value_source_and_doc() -> None:
    result = run_cli("settings")
    assert result.code == 0, result.output
    rows = _rows(result.out)
    assert list(rows) == [s.name for s in SCHEMA]
    assert rows["max_size"] == ["4", "default", "(1", "on", "Lambda,", "else", "4)"]
    assert rows["proxy_mode"] == ["direct", "default"]
    assert rows["application_name"] == ["serverless-pool", "default"]
    flat = " ".join(result.out.split())
    for setting in SCHEMA:
        assert " ".join(setting.doc.split()) in flat


def test_arguments_win_over_environment_variables_which_win_over_defaults() -> None:
    env = clean_env(SERVERLESS_POOL_MAX_SIZE="3", SERVERLESS_POOL_STATEMENT_TIMEOUT="2.5")
    result = run_cli("settings", "--max-size", "7", "--autocommit", "off", env=env)
    assert result.code == 0, result.output
    rows = _rows(result.out)
    assert rows["max_size"] == ["7", "argument", "--max-size"]
    assert rows["autocommit"] == ["false", "argument", "--autocommit"]
    assert rows["statement_timeout"] == ["2.5", "environment", "SERVERLESS_POOL_STATEMENT_TIMEOUT"]
    assert rows["min_size"] == ["0", "default"]


def test_defaults_that_depend_on_lambda_follow_the_environment() -> None:
    env = clean_env(AWS_LAMBDA_FUNCTION_NAME="orders-api")
    rows = _rows(run_cli("settings", env=env).out)
    assert rows["max_size"][0] == "1"
    assert rows["idle_session_timeout"][0] == "900"
    rows = _rows(run_cli("settings", "--proxy-mode", "rds-proxy", env=env).out)
    assert rows["idle_session_timeout"][0] == "0"
    assert rows["prepare_threshold"][0] == "none"


def test_an_invalid_combination_is_bad_input() -> None:
    result = run_cli("settings", "--max-size", "2", "--min-size", "3")
    assert result.code == 2
    assert "min_size (3, option --min-size) must not exceed max_size (2, option --max-size)" in (
        result.err
    )


def test_a_value_of_the_wrong_type_names_the_option() -> None:
    result = run_cli("settings", "--acquire-timeout", "soon")
    assert result.code == 2
    assert "--acquire-timeout: expected a number of seconds, got 'soon'" in result.err


def test_unknown_commands_and_options_are_bad_input() -> None:
    assert run_cli("frobnicate").code == 2
    result = run_cli("settings", "--max-sise", "2")
    assert result.code == 2
    assert "--max-sise" in result.err


def test_help_documents_the_exit_codes() -> None:
    result = run_cli("check", "--help")
    assert result.code == 0
    flat = " ".join(result.out.split())
    assert "Exit codes: 0 the check passed, 1 a problem was found" in flat
    assert "2 bad input" in flat


def test_importing_the_cli_loads_neither_frameworks_nor_the_fleet() -> None:
    code = (
        "import sys, serverless_pool.cli\n"
        "heavy = {'django', 'flask', 'multiprocessing', 'serverless_pool.fleet',"
        " 'serverless_pool.testing.postgres', 'serverless_pool.budget'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"
