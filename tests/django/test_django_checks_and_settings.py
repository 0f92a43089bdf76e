"""System checks (one test per id), settings precedence, the management command."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings
from django_serverless_pool.checks import check_databases, check_settings
from django_serverless_pool.conf import conf
from django_serverless_pool.release import pool_of
from django_testkit import APP_NAME

from serverless_pool import SettingsError
from serverless_pool.testing.postgres import APP_PASSWORD


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


@pytest.fixture
def default_db(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Change keys of DATABASES["default"] for one test (override_settings warns)."""

    def change(**changes: Any) -> None:
        for key, value in changes.items():
            monkeypatch.setitem(settings.DATABASES["default"], key, value)

    return change


def test_the_test_settings_pass_every_check() -> None:
    assert check_settings() == []


@override_settings(SERVERLESS_POOL=["max_size", 2])
def test_e001_settings_that_are_not_a_dict() -> None:
    assert ids(check_settings()) == ["serverless_pool.E001"]


@override_settings(SERVERLESS_POOL={"max_szie": 2})
def test_e002_unknown_key_with_a_suggestion() -> None:
    (error,) = check_settings()
    assert error.id == "serverless_pool.E002"
    assert "'max_szie'" in error.msg
    assert "did you mean 'max_size'?" in error.msg


def test_e002_unknown_key_in_an_alias(default_db: Any) -> None:
    default_db(SERVERLESS_POOL={"expected_concurency": 3})
    (error,) = check_settings()
    assert error.id == "serverless_pool.E002"
    assert 'DATABASES["default"]["SERVERLESS_POOL"]' in error.msg
    assert "did you mean 'expected_concurrency'?" in error.msg


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"max_size": "many"}, "max_size: expected a whole number"),
        ({"acquire_timeout": -1}, "acquire_timeout: must be more than 0"),
        ({"proxy_mode": "pgpool"}, "proxy_mode: expected one of"),
        ({"expected_concurrency": 0}, "expected_concurrency: expected a whole number"),
    ],
)
def test_e003_wrong_types_and_values_name_the_setting(values: dict[str, Any], words: str) -> None:
    with override_settings(SERVERLESS_POOL=values):
        (error,) = check_settings()
    assert error.id == "serverless_pool.E003"
    assert words in error.msg


def test_e004_conn_max_age_with_the_pool(default_db: Any) -> None:
    default_db(CONN_MAX_AGE=600)
    assert ids(check_settings()) == ["serverless_pool.E004"]


def test_e005_djangos_own_pool_with_ours(default_db: Any) -> None:
    default_db(OPTIONS={"pool": True})
    assert ids(check_settings()) == ["serverless_pool.E005"]


@override_settings(MIDDLEWARE=[])
def test_w001_missing_middleware() -> None:
    assert ids(check_settings()) == ["serverless_pool.W001"]


@pytest.mark.django_db
def test_e006_a_fleet_above_the_servers_budget(pools_closed_after: None) -> None:
    with override_settings(SERVERLESS_POOL={"max_size": 4, "expected_concurrency": 1000}):
        (error,) = check_databases(databases=["default"])
        assert error.id == "serverless_pool.E006"
        assert (
            "the fleet needs 4000 connections (max_size 4 x 1 worker per environment" in error.msg
        )
    with override_settings(SERVERLESS_POOL={"max_size": 1, "expected_concurrency": 10}):
        assert check_databases(databases=["default"]) == []
    # Without --database, no database is touched.
    assert check_databases(databases=None) == []


@pytest.mark.django_db
def test_e006_counts_every_worker_of_a_managed_instances_environment(
    monkeypatch: pytest.MonkeyPatch, pools_closed_after: None
) -> None:
    values = {"max_size": 1, "expected_concurrency": 10}
    with override_settings(SERVERLESS_POOL={**values, "workers_per_environment": 16}):
        (error,) = check_databases(databases=["default"])
    assert "the fleet needs 160 connections (max_size 1 x 16 workers per environment" in error.msg
    # Inside an environment, the runtime's own variable says how many workers there are.
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "12")
    with override_settings(SERVERLESS_POOL=values):
        (error,) = check_databases(databases=["default"])
    assert "needs 120 connections" in error.msg


@pytest.mark.django_db
def test_e007_an_unreachable_database_is_an_error_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, pools_closed_after: None
) -> None:
    monkeypatch.setitem(connections["default"].settings_dict, "PORT", "1")
    with override_settings(SERVERLESS_POOL={"expected_concurrency": 2, "acquire_timeout": 0.5}):
        (error,) = check_databases(databases=["default"])
    assert error.id == "serverless_pool.E007"
    assert "server unreachable" in error.msg
    assert APP_PASSWORD not in error.msg


def test_e008_settings_that_pin_rds_proxy_sessions() -> None:
    with override_settings(SERVERLESS_POOL={"proxy_mode": "rds-proxy", "prepare_threshold": 5}):
        errors = check_settings()
    assert ids(errors) == ["serverless_pool.E008"] * 2  # both aliases
    assert errors[0].msg.startswith("database 'default': behind RDS Proxy, prepared statements")


def test_w006_idle_session_timeout_0_on_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(SERVERLESS_POOL={"idle_session_timeout": 0}):
        warnings = check_settings()
    assert ids(warnings) == ["serverless_pool.W006"] * 2
    assert "an instance that Lambda freezes keeps its server slot" in warnings[0].msg
    # Left to its default, it is 0 here but 900 on Lambda: nothing to say.
    assert check_settings() == []


@pytest.mark.django_db
def test_the_fleet_is_counted_with_lambdas_default_max_size(pools_closed_after: None) -> None:
    # Checked off Lambda, where max_size defaults to 4; on Lambda it is 1.
    with override_settings(SERVERLESS_POOL={"expected_concurrency": 90}):
        assert check_databases(databases=["default"]) == []
        out = io.StringIO()
        call_command("serverless_pool", "check", "--database", "default", stdout=out)
    assert "fits: max_size 1 x 1 worker per environment x 90 environments" in out.getvalue()
    assert "(max_size 1 is its default on Lambda (4 here))" in out.getvalue()


def test_alias_settings_override_global_ones_which_override_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVERLESS_POOL_MAX_IDLE", "33")
    monkeypatch.setenv("SERVERLESS_POOL_MAX_SIZE", "9")
    default = conf.pool_settings("default")
    other = conf.pool_settings("other")
    assert default.max_idle == other.max_idle == 33.0  # from the environment
    assert default.max_size == 4  # SERVERLESS_POOL beats the environment
    assert other.max_size == 2  # the alias beats SERVERLESS_POOL
    assert default.name == "default"
    assert other.application_name != default.application_name == APP_NAME


def test_a_bad_environment_variable_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVERLESS_POOL_PING_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_PING_TIMEOUT"):
        conf.pool_settings("default")


@pytest.mark.django_db(transaction=True)
def test_override_settings_rebuilds_the_pool(pools_closed_after: None) -> None:
    before = pool_of("default")
    with override_settings(SERVERLESS_POOL={"max_size": 3, "application_name": APP_NAME}):
        during = pool_of("default")
        assert during is not before
        assert during.settings.max_size == 3
    assert before.closed


@pytest.mark.django_db(transaction=True)
def test_assume_role_and_time_zone_are_startup_parameters(
    postgres: Any, monkeypatch: pytest.MonkeyPatch, pools_closed_after: None
) -> None:
    postgres.execute(
        "DO $$ BEGIN CREATE ROLE django_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    postgres.execute("GRANT django_reader TO app")
    wrapper = connections["default"]
    wrapper.close()
    options = {**wrapper.settings_dict["OPTIONS"], "assume_role": "django_reader"}
    monkeypatch.setitem(wrapper.settings_dict, "OPTIONS", options)
    monkeypatch.setitem(wrapper.settings_dict, "TIME_ZONE", "Europe/Paris")
    monkeypatch.delattr(wrapper, "timezone_name", raising=False)
    monkeypatch.delattr(wrapper, "timezone", raising=False)
    wrapper.close_pool()
    for _ in range(3):
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT current_user, current_setting('TimeZone')")
            assert cursor.fetchone() == ("django_reader", "Europe/Paris")
        wrapper.close()
    stats = pool_of("default").stats()
    assert stats["borrows"] == 3
    assert stats["resets"] == 3  # each DISCARD ALL kept them: they are the session's defaults
    wrapper.close_pool()


@pytest.mark.django_db
def test_command_show_prints_the_settings_in_force_and_stats_without_the_password() -> None:
    out = io.StringIO()
    call_command("serverless_pool", "show", stdout=out)
    text = out.getvalue()
    assert "database 'default': host=127.0.0.1" in text
    default = text.split("database 'other'")[0]
    rows = {
        line.split()[0]: line.split()[1:] for line in default.splitlines() if line[:4] == "    "
    }
    assert rows["max_size"] == ["4", "SERVERLESS_POOL"]
    assert rows["pool_max"] == ["=", "4"]
    assert APP_PASSWORD not in text
    assert APP_PASSWORD not in repr(pool_of("default"))


@pytest.mark.django_db
def test_command_show_prints_the_prepare_threshold_the_connection_uses() -> None:
    out = io.StringIO()
    call_command("serverless_pool", "show", "--json", stdout=out)
    shown = next(d for d in json.loads(out.getvalue()) if d["name"] == "default")
    settings_in_force = {row["name"]: row for row in shown["settings"]}
    with connections["default"].cursor():
        live = connections["default"].connection.prepare_threshold
    assert live is None  # Django's default, which the ENGINE keeps
    assert settings_in_force["prepare_threshold"]["value"] is None
    assert settings_in_force["prepare_threshold"]["source"].startswith("Django's default")
    assert settings_in_force["autocommit"]["source"] == 'DATABASES["default"]["AUTOCOMMIT"]'


@pytest.mark.django_db
def test_command_check_reads_the_budget(pools_closed_after: None) -> None:
    out = io.StringIO()
    with override_settings(SERVERLESS_POOL={"max_size": 2, "expected_concurrency": 5}):
        call_command("serverless_pool", "check", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ok"] is True
    (default, other) = report["databases"]
    assert default["budget"]["max_connections"] == 100
    assert default["budget"]["reserved"] >= 3
    assert default["fleet"]["connections"] == 10
    assert default["fleet"]["fits"] is True
    assert default["session"]["prepare_threshold"] is None
    assert other["name"] == "other"
    assert APP_PASSWORD not in out.getvalue()


@pytest.mark.django_db
def test_command_check_fails_when_the_fleet_does_not_fit(pools_closed_after: None) -> None:
    out = io.StringIO()
    with (
        override_settings(SERVERLESS_POOL={"max_size": 4, "expected_concurrency": 500}),
        pytest.raises(CommandError, match="the check found an error"),
    ):
        call_command("serverless_pool", "check", "--database", "default", stdout=out)
    assert "DOES NOT FIT" in out.getvalue()
    assert "result:   FAILED" in out.getvalue()
    assert APP_PASSWORD not in out.getvalue()


def test_command_rejects_an_alias_without_the_engine() -> None:
    with pytest.raises(CommandError, match="nope"):
        call_command("serverless_pool", "show", "--database", "nope")
