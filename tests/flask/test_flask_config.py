"""``SERVERLESS_POOL_*`` config keys: defaults, environment fallback, errors naming the key."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_serverless_pool import ServerlessPool
from flask_serverless_pool.config import CONFIG_KEYS, read_config

from serverless_pool import SCHEMA, SettingsError
from serverless_pool.testing.postgres import PostgresServer

URL = "postgresql://app:app-secret@127.0.0.1:5432/app"


def app_with(**config: object) -> Flask:
    app = Flask("flask_config_test")
    app.config.update(config)
    return app


def test_every_setting_of_the_schema_has_a_config_key() -> None:
    assert sorted(CONFIG_KEYS) == sorted("SERVERLESS_POOL_" + s.name.upper() for s in SCHEMA)


def test_defaults_apply_when_nothing_is_configured() -> None:
    config = read_config({"SERVERLESS_POOL_DATABASE_URL": URL}, environ={})
    assert config.settings.max_size == 4
    assert config.settings.acquire_timeout == 5.0
    assert config.settings.autocommit is True
    assert config.sources["max_size"] == "default"


def test_config_values_may_be_strings_or_typed_values() -> None:
    config = read_config(
        {
            "SERVERLESS_POOL_DATABASE_URL": URL,
            "SERVERLESS_POOL_MAX_SIZE": "2",
            "SERVERLESS_POOL_ACQUIRE_TIMEOUT": 1.5,
            "SERVERLESS_POOL_AUTOCOMMIT": "off",
            "SERVERLESS_POOL_PROXY_MODE": "pgbouncer-transaction",
        },
        environ={},
    )
    settings = config.settings
    assert (settings.max_size, settings.acquire_timeout, settings.autocommit) == (2, 1.5, False)
    assert settings.prepare_threshold is None  # derived from the proxy mode
    assert config.sources["max_size"] == "config"


def test_environment_variables_fill_keys_the_config_does_not_set() -> None:
    environ = {
        "SERVERLESS_POOL_DATABASE_URL": URL,
        "SERVERLESS_POOL_MAX_SIZE": "3",
        "SERVERLESS_POOL_MIN_SIZE": "1",
    }
    config = read_config({"SERVERLESS_POOL_MIN_SIZE": 2}, environ=environ)
    assert config.conninfo == URL
    assert config.settings.max_size == 3
    assert config.settings.min_size == 2  # the config wins over the environment
    assert config.sources["max_size"] == "environment"
    assert config.sources["min_size"] == "config"


def test_lambda_defaults_follow_the_environment() -> None:
    environ = {"AWS_LAMBDA_FUNCTION_NAME": "orders"}
    config = read_config({"SERVERLESS_POOL_DATABASE_URL": URL}, environ=environ)
    assert config.settings.max_size == 1
    assert config.settings.idle_session_timeout == 900.0


def test_a_missing_database_url_names_the_key() -> None:
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_DATABASE_URL"):
        read_config({}, environ={})
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_DATABASE_URL"):
        read_config({"SERVERLESS_POOL_DATABASE_URL": "  "}, environ={})


def test_init_app_refuses_a_missing_database_url_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SERVERLESS_POOL_DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="Flask config key SERVERLESS_POOL_DATABASE_URL"):
        ServerlessPool(app_with())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SERVERLESS_POOL_MAX_SIZE", "many", "SERVERLESS_POOL_MAX_SIZE: expected a whole number"),
        ("SERVERLESS_POOL_MAX_SIZE", 0, "SERVERLESS_POOL_MAX_SIZE: must be at least 1"),
        ("SERVERLESS_POOL_ACQUIRE_TIMEOUT", -1, "SERVERLESS_POOL_ACQUIRE_TIMEOUT: must be"),
        ("SERVERLESS_POOL_PROXY_MODE", "pgpool", "SERVERLESS_POOL_PROXY_MODE: expected one of"),
        ("SERVERLESS_POOL_AUTOCOMMIT", "maybe", "SERVERLESS_POOL_AUTOCOMMIT: expected true"),
    ],
)
def test_an_invalid_value_names_the_config_key(key: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        ServerlessPool(app_with(SERVERLESS_POOL_DATABASE_URL=URL, **{key: value}))
    assert str(info.value).startswith("Flask config key ")


def test_a_misspelt_key_is_refused_with_a_suggestion() -> None:
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_MAX_SIZ; did you mean"):
        read_config({"SERVERLESS_POOL_DATABASE_URL": URL, "SERVERLESS_POOL_MAX_SIZ": 2})


def test_settings_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(
        SettingsError,
        match=r"min_size \(3, Flask config key SERVERLESS_POOL_MIN_SIZE\) must not exceed"
        r" max_size \(2, Flask config key SERVERLESS_POOL_MAX_SIZE\)",
    ):
        read_config(
            {
                "SERVERLESS_POOL_DATABASE_URL": URL,
                "SERVERLESS_POOL_MIN_SIZE": 3,
                "SERVERLESS_POOL_MAX_SIZE": 2,
            },
            environ={},
        )


def test_a_bad_database_url_is_refused_without_echoing_it() -> None:
    bad = "postgresql://app:hunter2-secret@127.0.0.1:5432/app?sslmode=sometimes&bogus=1"
    with pytest.raises(SettingsError) as info:
        ServerlessPool(app_with(SERVERLESS_POOL_DATABASE_URL=bad))
    assert "hunter2-secret" not in str(info.value)
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_DATABASE_URL") as typed:
        ServerlessPool(app_with(SERVERLESS_POOL_DATABASE_URL=12345))
    assert "12345" not in str(typed.value)


def test_the_database_url_never_shows_in_reprs(postgres: PostgresServer) -> None:
    app = app_with(SERVERLESS_POOL_DATABASE_URL=postgres.url())
    db = ServerlessPool(app)
    try:
        state = app.extensions["serverless_pool"]
        for text in (repr(db), repr(state), repr(state.config), state.target):
            assert "app-secret" not in text
        assert "127.0.0.1" in state.target
    finally:
        db.get_pool(app).close()
