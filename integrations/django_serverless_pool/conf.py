"""Settings of the Django integration, read lazily so ``override_settings`` works.

Pool settings come from three places, the first that has a value wins:

1. ``DATABASES[alias]["SERVERLESS_POOL"]``: settings for one database alias;
2. ``SERVERLESS_POOL``: settings for every alias;
3. ``SERVERLESS_POOL_*`` environment variables, then the schema's defaults.

Besides the core's settings (`serverless_pool.settings.SCHEMA`), one key belongs to the
integration: ``expected_concurrency``, how many instances (Lambda concurrency, gunicorn
workers × processes) may run at once, used by the connection budget check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from django.conf import settings

from serverless_pool import SCHEMA, PoolSettings, SettingsError
from serverless_pool.settings import unknown_name_message

__all__ = ["INTEGRATION_KEYS", "SETTING", "conf"]

SETTING: Final = "SERVERLESS_POOL"
#: Keys of ``SERVERLESS_POOL`` that the integration reads itself.
INTEGRATION_KEYS: Final = ("expected_concurrency",)
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

    def expected_concurrency(self, alias: str) -> int | None:
        """The declared number of instances running at once, or None if not declared."""
        return _concurrency(self.merged(alias).get("expected_concurrency"), _source(alias))

    def validate_shared(self) -> None:
        """Validate ``SERVERLESS_POOL`` on its own (one error, not one per alias)."""
        values = dict(self.global_values())
        for key in values:
            if key not in _KNOWN:
                raise SettingsError(unknown_key_message(key, SETTING))
        _concurrency(values.pop("expected_concurrency", None), SETTING)
        PoolSettings.load(values, source=f"{SETTING} setting")


def _concurrency(value: object, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(
            f"{source} setting expected_concurrency: expected a whole number"
            f" of at least 1, got {value!r}"
        )
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
