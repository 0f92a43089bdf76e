"""System checks, run by ``manage.py check``, ``runserver`` and ``migrate``.

===========================  =====================================================
``serverless_pool.E001``     ``SERVERLESS_POOL`` (or an alias's) is not a dict
``serverless_pool.E002``     unknown key in the settings (with a "did you mean")
``serverless_pool.E003``     a setting has a wrong type or value
``serverless_pool.E004``     ``CONN_MAX_AGE`` set on a pooled alias
``serverless_pool.E005``     Django's own ``OPTIONS["pool"]`` set on a pooled alias
``serverless_pool.E006``     ``max_size`` × ``expected_concurrency`` above the server's
                             connection budget (database check: ``check --database``
                             and ``migrate``)
``serverless_pool.W001``     the middleware is missing from ``MIDDLEWARE``
``serverless_pool.W002``     the budget could not be read (database check)
===========================  =====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from serverless_pool import SettingsError
from serverless_pool.budget import read_budget

from .conf import SETTING, conf
from .release import pool_of

__all__ = ["ENGINE", "MIDDLEWARE", "check_budget", "check_settings", "pooled_aliases"]

ENGINE = "django_serverless_pool.backends.postgresql"
MIDDLEWARE = "django_serverless_pool.middleware.ServerlessPoolMiddleware"


def pooled_aliases() -> list[str]:
    """Database aliases whose ENGINE is ours."""
    return [
        alias for alias, database in settings.DATABASES.items() if database.get("ENGINE") == ENGINE
    ]


@register()
def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """The static checks: settings, CONN_MAX_AGE, OPTIONS["pool"], middleware."""
    errors: list[CheckMessage] = []
    aliases = pooled_aliases()
    shared = getattr(settings, SETTING, None)
    if shared is not None and not isinstance(shared, dict):
        errors.append(
            Error(
                f"{SETTING} must be a dict of settings, got {type(shared).__name__}.",
                id="serverless_pool.E001",
            )
        )
        return errors
    shared_error = _as_error(conf.validate_shared) if aliases else None
    if shared_error is not None:
        errors.append(shared_error)
    for alias in aliases:
        database = settings.DATABASES[alias]
        if shared_error is None:
            errors.extend(_check_alias_settings(alias))
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age != 0:
            errors.append(
                Error(
                    f'DATABASES["{alias}"]["CONN_MAX_AGE"] is {max_age!r}, but the pool'
                    " already keeps connections.",
                    hint="Remove CONN_MAX_AGE (or set it to 0); use SERVERLESS_POOL's"
                    " max_idle and max_lifetime instead.",
                    id="serverless_pool.E004",
                )
            )
        if (database.get("OPTIONS") or {}).get("pool"):
            errors.append(
                Error(
                    f'DATABASES["{alias}"]["OPTIONS"]["pool"] enables Django\'s own pool,'
                    " which this ENGINE replaces.",
                    hint='Remove OPTIONS["pool"]; configure the pool in SERVERLESS_POOL.',
                    id="serverless_pool.E005",
                )
            )
    if aliases and MIDDLEWARE not in getattr(settings, "MIDDLEWARE", []):
        errors.append(
            Warning(
                f"{MIDDLEWARE} is not in MIDDLEWARE.",
                hint="Add it first in MIDDLEWARE, so that every request returns its"
                " connection even when a view raises or a response streams.",
                id="serverless_pool.W001",
            )
        )
    return errors


def _check_alias_settings(alias: str) -> Iterable[CheckMessage]:
    database = settings.DATABASES[alias]
    own = database.get(SETTING)
    if own is not None and not isinstance(own, dict):
        return [
            Error(
                f'DATABASES["{alias}"]["{SETTING}"] must be a dict of settings,'
                f" got {type(own).__name__}.",
                id="serverless_pool.E001",
            )
        ]

    def validate() -> None:
        conf.pool_settings(alias)
        conf.expected_concurrency(alias)

    error = _as_error(validate)
    return [] if error is None else [error]


def _as_error(validate: Callable[[], object]) -> Error | None:
    try:
        validate()
    except SettingsError as err:
        code = "E002" if str(err).startswith("unknown") else "E003"
        return Error(f"{err}.", id=f"serverless_pool.{code}")
    return None


@register(Tags.database)
def check_budget(
    app_configs: Sequence[Any] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """max_size × expected_concurrency must fit in the server's usable slots."""
    errors: list[CheckMessage] = []
    for alias in pooled_aliases():
        if databases is None or alias not in databases:
            continue
        try:
            instances = conf.expected_concurrency(alias)
            max_size = conf.pool_settings(alias).max_size
        except SettingsError:
            continue  # reported by check_settings
        if instances is None:
            continue
        try:
            with pool_of(alias).connection() as conn:
                budget = read_budget(conn)
        except Exception as err:  # noqa: BLE001 (any failure is reported, not raised)
            errors.append(
                Warning(
                    f"could not read the connection budget of database {alias!r}:"
                    f" {type(err).__name__}.",
                    id="serverless_pool.W002",
                )
            )
            continue
        if not budget.fits(max_size, instances):
            errors.append(
                Error(
                    f"database {alias!r}: max_size {max_size} × expected_concurrency"
                    f" {instances} = {max_size * instances} connections, but the server"
                    f" has {budget.usable} usable slots (max_connections"
                    f" {budget.max_connections}, {budget.reserved} reserved).",
                    hint="Lower max_size or the concurrency, raise max_connections, or"
                    " put RDS Proxy or PgBouncer in front (proxy_mode).",
                    id="serverless_pool.E006",
                )
            )
    return errors
