"""The settings schema: one definition, read from arguments and the environment."""

from __future__ import annotations

import pytest

from serverless_pool import SCHEMA, PoolSettings, ServerlessPool, SettingsError

LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "orders-api"}


def test_defaults_off_lambda() -> None:
    settings = PoolSettings.load(environ={})
    assert settings.max_size == 4
    assert settings.min_size == 0
    assert settings.idle_session_timeout == 0
    assert settings.autocommit is True
    assert settings.proxy_mode == "direct"
    assert settings.prepare_threshold is None  # prepared statements last one borrow
    assert settings.reset_on_return == "always"
    assert settings.session_reset is True


def test_defaults_on_lambda_hold_one_connection_and_give_the_slot_back() -> None:
    settings = PoolSettings.load(environ=LAMBDA)
    assert settings.max_size == 1
    assert settings.idle_session_timeout == 900


def test_behind_a_proxy_nothing_is_prepared_or_set_on_the_session() -> None:
    for mode in ("pgbouncer-transaction", "rds-proxy"):
        settings = PoolSettings.load({"proxy_mode": mode}, environ=LAMBDA)
        assert settings.prepare_threshold is None
        assert settings.idle_session_timeout == 0
        assert settings.uses_session_state is False
        assert settings.reset_on_return == "never"
        assert settings.session_reset is False


def test_environment_variables_are_read_and_arguments_win() -> None:
    env = {"SERVERLESS_POOL_MAX_SIZE": "7", "SERVERLESS_POOL_AUTOCOMMIT": "off"}
    assert PoolSettings.load(environ=env).max_size == 7
    assert PoolSettings.load(environ=env).autocommit is False
    assert PoolSettings.load({"max_size": 2}, environ=env).max_size == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_size": 0}, "keyword argument max_size: must be at least 1, got 0"),
        ({"max_size": "many"}, "max_size: expected a whole number, got 'many'"),
        ({"max_size": True}, "max_size: expected a whole number, not a boolean"),
        ({"acquire_timeout": -1}, "acquire_timeout: must be more than 0"),
        ({"ping_after_idle": float("nan")}, "ping_after_idle: must be a finite number"),
        ({"proxy_mode": "pgbouncer"}, "proxy_mode: expected one of 'direct'"),
        ({"autocommit": "maybe"}, "autocommit: expected true or false"),
        ({"min_size": 5, "max_size": 2}, r"min_size \(5, keyword argument min_size\) must not"),
        ({"max_sise": 2}, "unknown keyword argument 'max_sise'; did you mean 'max_size'"),
        ({"frobnicate": 2}, "unknown keyword argument 'frobnicate'; known settings:"),
    ],
)
def test_bad_values_name_the_setting(values: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        PoolSettings.load(values, environ={})


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="environment variable SERVERLESS_POOL_MAX_SIZE"):
        PoolSettings.load(environ={"SERVERLESS_POOL_MAX_SIZE": "-3"})
    with pytest.raises(SettingsError, match="SERVERLESS_POOL_PROXY_MODE is empty"):
        PoolSettings.load(environ={"SERVERLESS_POOL_PROXY_MODE": " "})


def test_the_source_is_named_for_integrations() -> None:
    with pytest.raises(SettingsError, match="unknown SERVERLESS_POOL setting 'maxsize'"):
        PoolSettings.load({"maxsize": 1}, environ={}, source="SERVERLESS_POOL setting")


def test_every_setting_is_documented_and_has_an_environment_variable() -> None:
    names = [s.name for s in SCHEMA]
    assert len(names) == len(set(names))
    assert names == list(PoolSettings.load({}, environ={}).as_dict())
    for setting in SCHEMA:
        assert setting.doc.endswith("."), setting.name
        assert setting.env_var == "SERVERLESS_POOL_" + setting.name.upper()


def test_the_pool_rejects_bad_settings_before_connecting() -> None:
    with pytest.raises(SettingsError, match="max_size"):
        ServerlessPool("host=127.0.0.1 dbname=x", max_size=-1)
    with pytest.raises(SettingsError, match="password: expected a string or a callable"):
        ServerlessPool("host=127.0.0.1 dbname=x", password=1234)  # type: ignore[arg-type]


def test_replace_validates() -> None:
    settings = PoolSettings.load(environ={})
    assert settings.replace(max_size=9).max_size == 9
    with pytest.raises(SettingsError, match="max_size"):
        settings.replace(max_size="x")


def test_settings_are_immutable_values_and_replace_validates() -> None:
    settings = PoolSettings.load({"max_size": 3}, environ={})
    assert settings == PoolSettings.load({"max_size": "3"}, environ={})
    assert hash(settings) == hash(PoolSettings.load({"max_size": 3}, environ={}))
    assert settings != PoolSettings.load({"max_size": 2}, environ={})
    with pytest.raises(AttributeError, match=r"immutable.*'max_size'"):
        settings.max_size = 9  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del settings.max_size
    with pytest.raises(AttributeError, match="immutable"):
        SCHEMA[0].default = "other"  # type: ignore[misc]
    changed = settings.replace(max_size="5")
    assert (changed.max_size, settings.max_size) == (5, 3)
    assert changed.as_dict() == {**settings.as_dict(), "max_size": 5}
    with pytest.raises(SettingsError, match="max_size"):
        settings.replace(max_size=0)
    assert repr(settings).startswith("PoolSettings(name='default', max_size=3, ")
    with pytest.raises(TypeError, match="missing"):
        PoolSettings(name="x")
