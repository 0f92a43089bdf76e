"""Reading the pool's settings from a Flask app's config.

Every key is ``SERVERLESS_POOL_`` followed by a setting of the core schema in upper
case, the same spelling as the environment variables, so a value can move between the
environment and the config without renaming. Errors name the config key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from serverless_pool.errors import SettingsError
from serverless_pool.settings import (
    ENV_PREFIX,
    SCHEMA,
    PoolSettings,
    show_value,
    unknown_name_message,
)

__all__ = ["CONFIG_KEYS", "DATABASE_URL_KEY", "PoolConfig", "read_config"]

DATABASE_URL_KEY: Final = ENV_PREFIX + "DATABASE_URL"
#: Config key of each setting, e.g. ``SERVERLESS_POOL_MAX_SIZE`` for ``max_size``.
CONFIG_KEYS: Final = {setting.env_var: setting for setting in SCHEMA}
_SOURCE: Final = "Flask config key"


@dataclass(frozen=True)
class PoolConfig:
    """What one app's config asks for: where to connect and how to pool."""

    #: not in the repr: it may hold a password
    conninfo: str = field(repr=False)
    settings: PoolSettings = field()
    #: where each setting came from: "config", "environment" or "default"
    sources: Mapping[str, str] = field()


def read_config(
    config: Mapping[str, object],
    *,
    default_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> PoolConfig:
    """Validate the ``SERVERLESS_POOL_*`` keys of `config`.

    Keys absent from the config fall back to the environment variable of the same
    name, then to the schema's default. `default_name` names the pool when neither
    sets ``SERVERLESS_POOL_NAME`` (the extension passes the app's name).
    """
    env = os.environ if environ is None else environ
    _refuse_unknown_keys(config)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, setting in CONFIG_KEYS.items():
        if key in config:
            value = config[key]
            try:
                setting.parse(value)
            except ValueError as err:
                raise SettingsError(f"{_SOURCE} {key}: {err}, got {show_value(value)}") from None
            values[setting.name] = value
            sources[setting.name] = "config"
        elif key in env:
            sources[setting.name] = "environment"
        else:
            sources[setting.name] = "default"
    if sources["name"] == "default" and default_name:
        values["name"] = default_name[-63:]
        sources["name"] = "app name"
    settings = PoolSettings.load(
        values, environ=env, source=_SOURCE, spell=lambda name: ENV_PREFIX + name.upper()
    )
    return PoolConfig(_conninfo(config, env), settings, sources)


def _conninfo(config: Mapping[str, object], env: Mapping[str, str]) -> str:
    if DATABASE_URL_KEY in config:
        value = config[DATABASE_URL_KEY]
        if not isinstance(value, str) or not value.strip():
            # Never echo the value: it may hold a password.
            raise SettingsError(
                f"{_SOURCE} {DATABASE_URL_KEY}: expected a non-empty libpq connection"
                f" string or postgresql:// URL, got a {type(value).__name__}"
                + (" that is empty" if isinstance(value, str) else "")
            )
        return value
    value = env.get(DATABASE_URL_KEY, "")
    if value.strip():
        return value
    raise SettingsError(
        f"no database to connect to: set the {_SOURCE} {DATABASE_URL_KEY} (or the"
        f" environment variable of the same name) to a libpq connection string or a"
        f" postgresql:// URL"
    )


def _refuse_unknown_keys(config: Mapping[str, object]) -> None:
    known = {*CONFIG_KEYS, DATABASE_URL_KEY}
    for key in sorted(k for k in config if isinstance(k, str) and k.startswith(ENV_PREFIX)):
        if key not in known:
            raise SettingsError(
                unknown_name_message(key, known, _SOURCE, quote=False, known_as="keys")
            )
