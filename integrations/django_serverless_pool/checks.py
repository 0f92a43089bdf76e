"""System checks, run by ``manage.py check``, ``runserver``, ``migrate`` and the test runner.

The ENGINE registers them when Django loads it, so they run whether or not the app is in
``INSTALLED_APPS``; `make_handler` runs the same static checks once per instance, at
init, and logs what is wrong. The rules shared with the other check commands (the
budget, the idle timeout, RDS Proxy pinning) come from `serverless_pool.checks`, with
the same words.

===========================  =====================================================
``serverless_pool.E001``     ``SERVERLESS_POOL`` (or an alias's) is not a dict
``serverless_pool.E002``     unknown key in the settings (with a "did you mean")
``serverless_pool.E003``     a setting has a wrong type or value
``serverless_pool.E004``     ``CONN_MAX_AGE`` set on a pooled alias
``serverless_pool.E005``     Django's own ``OPTIONS["pool"]`` set on a pooled alias
``serverless_pool.E006``     the fleet (``max_size`` × workers per environment ×
                             ``expected_concurrency``) needs more connections than
                             the server's budget (database check)
``serverless_pool.E007``     the database cannot be used: wrong password, unknown
                             database, unreachable host..., with the reason
                             (database check)
``serverless_pool.E008``     behind RDS Proxy, a setting pins sessions
``serverless_pool.W001``     the middleware is missing from ``MIDDLEWARE``
``serverless_pool.W002``     connected, but the budget could not be read (database check)
``serverless_pool.W003``     ``django_serverless_pool`` is not in ``INSTALLED_APPS``
``serverless_pool.W004``     ``CONN_HEALTH_CHECKS`` set on a pooled alias (no effect)
``serverless_pool.W005``     the middleware comes after middleware that may query the
                             database
``serverless_pool.W006``     ``idle_session_timeout`` is 0 on Lambda (direct mode)
``serverless_pool.W008``     behind a proxy, a setting that needs session state is not
                             applied (a server-side timeout, prepared statements)
===========================  =====================================================

Database checks (tagged ``database``) connect: they run with ``check --database ALIAS``,
before ``migrate`` and at the start of test runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from serverless_pool import SettingsError
from serverless_pool.checks import Problem, register_configuration_check, settings_problems
from serverless_pool.settings import running_on_lambda

from .conf import SETTING, conf

__all__ = [
    "APP",
    "ENGINE",
    "MIDDLEWARE",
    "check_databases",
    "check_settings",
    "django_problems",
    "message_of",
    "pooled_aliases",
]

APP = "django_serverless_pool"
ENGINE = "django_serverless_pool.backends.postgresql"
MIDDLEWARE = "django_serverless_pool.middleware.ServerlessPoolMiddleware"

#: Check ids of the problems `serverless_pool.checks` finds.
SHARED_IDS: Final = {
    "budget": "serverless_pool.E006",
    "cannot-connect": "serverless_pool.E007",
    "pins-session": "serverless_pool.E008",
    "budget-unreadable": "serverless_pool.W002",
    "idle-session-timeout": "serverless_pool.W006",
    "session-state-behind-proxy": "serverless_pool.W008",
}
# Middleware known to leave the database alone: the pool's middleware may come after them.
_NO_DATABASE: Final = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.gzip.GZipMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.http.ConditionalGetMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django.middleware.locale.LocaleMiddleware",
        "corsheaders.middleware.CorsMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
    }
)


def pooled_aliases() -> list[str]:
    """Database aliases whose ENGINE is ours."""
    return [
        alias for alias, database in settings.DATABASES.items() if database.get("ENGINE") == ENGINE
    ]


@register()
def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """The static checks: settings, Django's options, the app, the middleware."""
    return [message_of(p) for p in django_problems() + shared_problems()]


@register(Tags.database)
def check_databases(
    app_configs: Sequence[Any] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Connect to each pooled alias asked for: the database, its budget and the fleet."""
    from .report import database_report

    messages: list[CheckMessage] = []
    for alias in pooled_aliases():
        if databases is None or alias not in databases:
            continue
        try:
            report = database_report(alias)
        except SettingsError:
            continue  # reported by check_settings
        # The static rules are check_settings' business: only what the server said.
        server = ("cannot-connect", "budget", "budget-unreadable")
        messages += [message_of(_for_alias(alias, p)) for p in report.problems if p.code in server]
    return messages


def django_problems() -> list[Problem]:
    """The problems only Django has: its settings, options, app and middleware."""
    aliases = pooled_aliases()
    if not aliases:
        return []
    problems: list[Problem] = []
    shared = getattr(settings, SETTING, None)
    if shared is not None and not isinstance(shared, dict):
        return [
            _error(
                "E001",
                f"{SETTING} must be a dict of settings, got {type(shared).__name__}",
            )
        ]
    shared_error = _settings_error(conf.validate_shared)
    if shared_error is not None:
        problems.append(shared_error)
    for alias in aliases:
        database = settings.DATABASES[alias]
        if shared_error is None:
            problems += _check_alias_settings(alias)
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age != 0:
            problems.append(
                _error(
                    "E004",
                    f'DATABASES["{alias}"]["CONN_MAX_AGE"] is {max_age!r}, but the pool'
                    " already keeps connections",
                    "remove CONN_MAX_AGE (or set it to 0); use SERVERLESS_POOL's"
                    " max_idle and max_lifetime instead",
                )
            )
        if (database.get("OPTIONS") or {}).get("pool"):
            problems.append(
                _error(
                    "E005",
                    f'DATABASES["{alias}"]["OPTIONS"]["pool"] enables Django\'s own pool,'
                    " which this ENGINE replaces",
                    'remove OPTIONS["pool"]; configure the pool in SERVERLESS_POOL',
                )
            )
        if database.get("CONN_HEALTH_CHECKS"):
            problems.append(
                _warning(
                    "W004",
                    f'DATABASES["{alias}"]["CONN_HEALTH_CHECKS"] has no effect with this'
                    " ENGINE: the pool checks every connection it lends",
                    "remove CONN_HEALTH_CHECKS; see SERVERLESS_POOL's ping_after_idle",
                )
            )
    if not apps.is_installed(APP):
        problems.append(
            _warning(
                "W003",
                f"{APP} is not in INSTALLED_APPS: its ENGINE still runs these checks, but"
                " the `manage.py serverless_pool` command is not available",
                f'add "{APP}" to INSTALLED_APPS',
            )
        )
    problems += _middleware_problems()
    return problems


def shared_problems() -> list[Problem]:
    """`serverless_pool.checks.settings_problems` for each pooled alias's settings."""
    problems: list[Problem] = []
    on_lambda = running_on_lambda()
    for alias in pooled_aliases():
        database = settings.DATABASES[alias]
        try:
            pool_settings = conf.engine_settings(alias, database)
            chosen = [name for name, (_, explicit) in conf.sources(alias).items() if explicit]
        except (SettingsError, TypeError):
            continue  # reported by django_problems
        options = database.get("OPTIONS") or {}
        found = settings_problems(
            pool_settings,
            explicit=chosen,
            on_lambda=on_lambda,
            conninfo_params={"options": options.get("options")},
        )
        problems += [_for_alias(alias, p) for p in found]
    return problems


def message_of(problem: Problem) -> CheckMessage:
    """A problem as Django's check message (the id is the problem's Django id)."""
    check_id = SHARED_IDS.get(problem.code, problem.code)
    kind = Error if problem.level == "error" else Warning
    return kind(
        _sentence(problem.message),
        hint=_sentence(problem.hint[:1].upper() + problem.hint[1:]) if problem.hint else None,
        id=check_id,
    )


def _for_alias(alias: str, problem: Problem) -> Problem:
    return Problem(
        problem.level, problem.code, f"database {alias!r}: {problem.message}", problem.hint
    )


def _middleware_problems() -> list[Problem]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE not in middleware:
        return [
            _warning(
                "W001",
                f"{MIDDLEWARE} is not in MIDDLEWARE",
                "add it first in MIDDLEWARE, so that every request returns its connection"
                " even when a view raises or a response streams",
            )
        ]
    before = [m for m in middleware[: middleware.index(MIDDLEWARE)] if m not in _NO_DATABASE]
    if not before:
        return []
    return [
        _warning(
            "W005",
            f"{MIDDLEWARE} comes after {', '.join(before)}, which may query the"
            " database outside it",
            "move it first in MIDDLEWARE, so the connections of every middleware go back"
            " to the pool when the request ends",
        )
    ]


def _check_alias_settings(alias: str) -> Iterable[Problem]:
    database = settings.DATABASES[alias]
    own = database.get(SETTING)
    if own is not None and not isinstance(own, dict):
        return [
            _error(
                "E001",
                f'DATABASES["{alias}"]["{SETTING}"] must be a dict of settings,'
                f" got {type(own).__name__}",
            )
        ]

    def validate() -> None:
        conf.pool_settings(alias)
        conf.expected_concurrency(alias)
        conf.workers_per_environment(alias)

    error = _settings_error(validate)
    return [] if error is None else [error]


def _settings_error(validate: Callable[[], object]) -> Problem | None:
    try:
        validate()
    except SettingsError as err:
        return _error("E002" if str(err).startswith("unknown") else "E003", str(err))
    return None


def _error(code: str, message: str, hint: str = "") -> Problem:
    return Problem("error", f"serverless_pool.{code}", message, hint)


def _warning(code: str, message: str, hint: str = "") -> Problem:
    return Problem("warning", f"serverless_pool.{code}", message, hint)


def _sentence(text: str) -> str:
    """Django's messages end with a full stop; a question or a stop is not doubled."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


@register_configuration_check
def _at_init() -> list[Problem]:
    # make_handler's check at init: what `manage.py check` would say, without a server.
    return django_problems() + shared_problems()
