"""Settings of the Django integration, read lazily so ``override_settings`` works.

Pool settings come from three places, the first that has a value wins:

1. ``DATABASES[alias]["SERVERLESS_POOL"]``: settings for one database alias;
2. ``SERVERLESS_POOL``: settings for every alias;
3. ``SERVERLESS_POOL_*`` environment variables, then the schema's defaults.

Besides the core's settings (`serverless_pool.settings.SCHEMA`), two keys belong to the
integration, both for the connection budget check: ``expected_concurrency``, how many
execution environments (Lambda instances; gunicorn processes across hosts) may run at
once, and ``workers_per_environment``, the processes of one environment, each with its
own pool (``AWS_LAMBDA_MAX_CONCURRENCY`` on Lambda Managed Instances; by default read
from that variable, else 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from django.conf import settings

from serverless_pool import SCHEMA, PoolSettings, SettingsError
from serverless_pool.settings import unknown_name_message, workers_per_environment

__all__ = ["INTEGRATION_KEYS", "SETTING", "conf"]

SETTING: Final = "SERVERLESS_POOL"
#: Keys of ``SERVERLESS_POOL`` that the integration reads itself.
INTEGRATION_KEYS: Final = ("expected_concurrency", "workers_per_environment")
_KNOWN: Final = tuple(s.name for s in SCHEMA) + INTEGRATION_KEYS


class Conf:
    """Read-only view of the integration's settings; every access reads Django's settings."""

    def global_values(self) -> Mapping[str, Any]:
        """The ``SERVERLESS_POOL`` mapping (empty when unset)."""
        return _mapping(getattr(settings, SETTING, None), SETTING)

    def alias_values(self, alias: str) -> Mapping[str, Any]:
        """``DATABASES[alias]["SERVERLESS_POOL"]`` (empty when unset)."""
        database = settings.DATABASES.get(alias, {})
        return _mapping(database.get(SETTING), _alias_source(alias))

    def merged(self, alias: str) -> dict[str, Any]:
        """Global settings overridden by the alias's own, unknown keys rejected."""
        shared, own = self.global_values(), self.alias_values(alias)
        for where, values in ((SETTING, shared), (_alias_source(alias), own)):
            for key in values:
                if key not in _KNOWN:
                    raise SettingsError(unknown_key_message(key, where))
        return {**shared, **own}

    def pool_settings(self, alias: str, *, autocommit: bool = True) -> PoolSettings:
        """Validated pool settings for `alias`; the pool is named after the alias."""
        values = self.merged(alias)
        for key in INTEGRATION_KEYS:
            values.pop(key, None)
        values.setdefault("name", alias)
        # Django switches autocommit itself; starting in its mode saves a switch per request.
        values["autocommit"] = autocommit
        return PoolSettings.load(values, source=f"{_source(alias)} setting")

    def engine_settings(self, alias: str, settings_dict: Mapping[str, Any]) -> PoolSettings:
        """The settings the ENGINE's pool for `alias` runs with (`settings_dict` is the
        alias's ``DATABASES`` entry): ``autocommit`` follows ``AUTOCOMMIT`` and, unless
        set here, ``prepare_threshold`` follows ``OPTIONS`` (Django's default: none,
        which also spares psycopg a prepared-statement cache look-up per query)."""
        values = self.pool_settings(alias, autocommit=settings_dict.get("AUTOCOMMIT", True))
        if "prepare_threshold" in self.merged(alias):
            return values
        options = settings_dict.get("OPTIONS") or {}
        return values.replace(prepare_threshold=options.get("prepare_threshold"))

    def expected_concurrency(self, alias: str) -> int | None:
        """The declared number of environments running at once, or None if not declared."""
        return _concurrency(self.merged(alias).get("expected_concurrency"), _source(alias))

    def workers_per_environment(self, alias: str) -> int:
        """Processes per execution environment: the setting, else the environment's."""
        declared = _count(
            self.merged(alias).get("workers_per_environment"),
            f"{_source(alias)} setting workers_per_environment",
        )
        return workers_per_environment() if declared is None else declared

    def sources(self, alias: str) -> dict[str, tuple[str, bool]]:
        """Where each pool setting of `alias` comes from, and whether the user set it."""
        shared, own = self.global_values(), self.alias_values(alias)
        database = settings.DATABASES.get(alias, {})
        found: dict[str, tuple[str, bool]] = {}
        for setting in SCHEMA:
            name = setting.name
            if name in own:
                found[name] = (_alias_source(alias), True)
            elif name in shared:
                found[name] = (SETTING, True)
            elif name == "autocommit":
                found[name] = (f'DATABASES["{alias}"]["AUTOCOMMIT"]', "AUTOCOMMIT" in database)
            elif name == "prepare_threshold":
                given = "prepare_threshold" in (database.get("OPTIONS") or {})
                where = f'DATABASES["{alias}"]["OPTIONS"]["prepare_threshold"]'
                found[name] = (where if given else f"Django's default (none, as {where})", given)
            elif setting.env_var in os.environ:
                found[name] = (f"environment {setting.env_var}", True)
            elif name == "name":
                found[name] = ("the alias", False)
            else:
                doc = f" ({setting.default_doc})" if setting.default_doc else ""
                found[name] = (f"default{doc}", False)
        return found

    def validate_shared(self) -> None:
        """Validate ``SERVERLESS_POOL`` on its own (one error, not one per alias)."""
        values = dict(self.global_values())
        for key in values:
            if key not in _KNOWN:
                raise SettingsError(unknown_key_message(key, SETTING))
        _concurrency(values.pop("expected_concurrency", None), SETTING)
        _count(
            values.pop("workers_per_environment", None),
            f"{SETTING} setting workers_per_environment",
        )
        PoolSettings.load(values, source=f"{SETTING} setting")


def _concurrency(value: object, source: str) -> int | None:
    return _count(value, f"{source} setting expected_concurrency")


def _count(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{where}: expected a whole number of at least 1, got {value!r}")
    return value


def unknown_key_message(key: str, source: str) -> str:
    """``unknown SERVERLESS_POOL setting 'max_szie'; did you mean 'max_size'?``"""
    return unknown_name_message(key, _KNOWN, f"{source} setting")


def _source(alias: str) -> str:
    overrides = settings.DATABASES.get(alias, {}).get(SETTING)
    return f"{SETTING} (or {_alias_source(alias)})" if overrides else SETTING


def _alias_source(alias: str) -> str:
    return f'DATABASES["{alias}"]["{SETTING}"]'


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{where} must be a dict of settings, got {type(value).__name__}")
    return value


conf = Conf()
