"""What every check command finds, and the one report it prints.

``serverless-pool check``, ``manage.py serverless_pool check`` and ``flask
serverless-pool check`` each gather a pool and where its settings came from, then call
`check_database()`: the problems, their words, the text and the JSON are made here, so
the three commands agree. The rules that need no server (`settings_problems()`) also
serve Django's system checks and `make_handler`'s check at init, where integrations add
the checks of their own configuration with `register_configuration_check()`.

A problem is an ``error`` (the command exits with status 1) or a ``warning``; its
``code`` is stable, for scripts reading ``--json``:

=========================  ===========================================================
``cannot-connect``         the pool could not connect or run a query (with the reason)
``budget``                 the fleet needs more connections than the server's usable slots
``budget-unreadable``      connected, but the budget could not be read
``pins-session``           behind RDS Proxy, a setting or the conninfo pins sessions
``idle-session-timeout``   direct mode on Lambda with ``idle_session_timeout`` 0
``session-state-behind-    behind a proxy, a setting that needs session state (a
proxy``                    server-side timeout, prepared statements) is not applied
=========================  ===========================================================

The fleet is counted as it runs on Lambda: checked from elsewhere, a ``max_size`` left
to its default counts as 1, its default there (`fleet_of()`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import psycopg

from . import lifecycle
from .budget import Budget, Fleet, read_budget
from .settings import SCHEMA, PoolSettings, running_on_lambda

if TYPE_CHECKING:
    from .pool import ServerlessPool

__all__ = [
    "DatabaseReport",
    "PinItem",
    "Problem",
    "Report",
    "SettingRow",
    "check_database",
    "configuration_problems",
    "fleet_of",
    "log_configuration_problems",
    "pinning_items",
    "register_configuration_check",
    "settings_problems",
    "show_value",
]

logger = logging.getLogger("serverless_pool")

Level = Literal["error", "warning"]

#: The server-side values the check reads on the pool's own session.
_SESSION_QUERY: Final = """
    SELECT current_setting('server_version'),
           current_user,
           current_setting('TimeZone'),
           current_setting('application_name'),
           current_setting('statement_timeout'),
           current_setting('idle_in_transaction_session_timeout'),
           current_setting('idle_session_timeout', true)
"""
_SESSION_NAMES: Final = (
    "role",
    "TimeZone",
    "application_name",
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
)
_FLEET_HINT: Final = (
    "lower max_size, cap the function's reserved concurrency (and, on Lambda Managed"
    " Instances, AWS_LAMBDA_MAX_CONCURRENCY), or put RDS Proxy or PgBouncer in front"
    " (proxy_mode)"
)


@dataclass(frozen=True)
class Problem:
    """Something a check found: an ``error`` fails the command, a ``warning`` does not."""

    level: Level
    code: str
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class SettingRow:
    """A setting in force, and where its value came from."""

    name: str
    value: object
    #: e.g. ``default``, ``argument --max-size``, ``environment SERVERLESS_POOL_MAX_IDLE``
    source: str
    #: set by the user (anywhere), not the schema's default
    explicit: bool


@dataclass(frozen=True)
class PinItem:
    """One thing that pins an RDS Proxy session, and what the pool does about it."""

    item: str
    verdict: Literal["ok", "PINS", "your code"]
    detail: str


@dataclass
class DatabaseReport:
    """What the check found for one database (one pool)."""

    name: str
    #: host, port, database and user: never the password
    target: str
    settings: list[SettingRow]
    fleet: Fleet
    #: why the fleet's max_size differs from the setting in force, if it does
    fleet_note: str = ""
    server_version: str | None = None
    #: what the pool's own session runs with: the server's values and psycopg's
    session: dict[str, object] = field(default_factory=dict)
    budget: Budget | None = None
    pinning: list[PinItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        budget = self.budget
        fleet = self.fleet
        return {
            "name": self.name,
            "target": self.target,
            "settings": [
                {"name": r.name, "value": _jsonable(r.value), "source": r.source}
                for r in self.settings
            ],
            "server_version": self.server_version,
            "session": {k: _jsonable(v) for k, v in self.session.items()},
            "budget": None
            if budget is None
            else {
                "max_connections": budget.max_connections,
                "reserved": budget.reserved,
                "role_limit": budget.role_limit,
                "database_limit": budget.database_limit,
                "usable": budget.usable,
                "in_use": budget.in_use,
                "free": budget.free,
            },
            "fleet": {
                "max_size": fleet.max_size,
                "workers_per_environment": fleet.workers_per_environment,
                "environments": fleet.environments,
                "connections_per_environment": fleet.per_environment,
                "note": self.fleet_note,
                "connections": fleet.connections,
                "fits": None if budget is None else fleet.fits(budget),
                "environments_that_fit": None
                if budget is None
                else fleet.environments_that_fit(budget),
            },
            "pinning": [
                {"item": p.item, "verdict": p.verdict, "detail": p.detail} for p in self.pinning
            ],
        }

    def lines(self) -> list[str]:
        """The text of this database's part of the report."""
        database = self
        lines = [f"database {database.name!r}: {database.target}", "  settings:"]
        shown = [(r.name, show_value(r.value), r.source) for r in database.settings]
        if shown:
            name_width = max(len(n) for n, _, _ in shown)
            value_width = max(len(v) for _, v, _ in shown)
            lines += [f"    {n:<{name_width}}  {v:<{value_width}}  {s}" for n, v, s in shown]
        if database.server_version is not None:
            lines.append(f"  server:   PostgreSQL {database.server_version}")
            session = " ".join(f"{k}={show_value(v)}" for k, v in database.session.items())
            lines.append(f"  session:  {session}")
        budget = database.budget
        if budget is not None:
            lines.append("  budget:")
            rows = (
                ("max_connections", budget.max_connections),
                ("reserved (superuser)", budget.reserved),
                ("role connection limit", show_value(budget.role_limit)),
                ("database connection limit", show_value(budget.database_limit)),
                ("usable slots", budget.usable),
                ("in use now (all clients)", budget.in_use),
                ("free now", budget.free),
            )
            lines += [f"    {label:<26}  {value}" for label, value in rows]
            lines.append(f"  fleet:    {_fleet_line(database.fleet, budget)}")
            if database.fleet_note:
                lines.append(f"            ({database.fleet_note})")
        if database.pinning:
            lines.append("  rds-proxy pinning (what would pin a session, and what the pool does):")
            lines += [f"    {p.item:<20}  {p.verdict:<9}  {p.detail}" for p in database.pinning]
        for problem in database.problems:
            lines += _problem_lines(problem, indent="  ")
        return lines


@dataclass
class Report:
    """The result of a check command: every database checked, and every problem."""

    databases: list[DatabaseReport] = field(default_factory=list)
    #: problems that belong to no single database (e.g. the framework's configuration)
    problems: list[Problem] = field(default_factory=list)

    def all_problems(self) -> list[tuple[str | None, Problem]]:
        """Every problem, with the name of its database (None for the general ones)."""
        found: list[tuple[str | None, Problem]] = [(None, p) for p in self.problems]
        for database in self.databases:
            found += [(database.name, p) for p in database.problems]
        return found

    @property
    def ok(self) -> bool:
        return not any(p.level == "error" for _, p in self.all_problems())

    @property
    def exit_code(self) -> int:
        """0 when no error was found, 1 otherwise."""
        return 0 if self.ok else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [
                {"database": name, **problem.as_dict()} for name, problem in self.all_problems()
            ],
            "databases": [d.as_dict() for d in self.databases],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def render(self) -> str:
        """The report as text, the same for every command."""
        lines = [line for p in self.problems for line in _problem_lines(p, indent="")]
        for database in self.databases:
            lines += database.lines()
        errors = sum(p.level == "error" for _, p in self.all_problems())
        warnings = sum(p.level == "warning" for _, p in self.all_problems())
        counts = ", ".join(
            f"{n} {word}{'' if n == 1 else 's'}"
            for n, word in ((errors, "error"), (warnings, "warning"))
            if n
        )
        if errors:
            lines.append(f"result:   FAILED ({counts})")
        else:
            lines.append(f"result:   ok{f' ({counts})' if counts else ''}")
        return "\n".join(lines)


# -- the rules that need no server ---------------------------------------------------


def settings_problems(
    settings: PoolSettings,
    *,
    explicit: Iterable[str] = (),
    on_lambda: bool = False,
    conninfo_params: Mapping[str, object] | None = None,
) -> list[Problem]:
    """What is wrong with `settings`, as far as can be told without a server.

    `explicit` names the settings the user set (the others are the schema's defaults,
    some of which differ on Lambda); `on_lambda` says whether the check runs there.
    """
    chosen = set(explicit)
    problems: list[Problem] = []
    if (
        settings.uses_session_state
        and not settings.idle_session_timeout
        and (on_lambda or "idle_session_timeout" in chosen)
    ):
        problems.append(
            Problem(
                "warning",
                "idle-session-timeout",
                "idle_session_timeout is 0: an instance that Lambda freezes keeps its server"
                " slot until the server or the network ends the session",
                "set idle_session_timeout (900 is the default on Lambda) so the server"
                " takes the slot of a frozen instance back",
            )
        )
    problems += [
        Problem("warning", "session-state-behind-proxy", warning)
        for warning in settings.session_state_warnings()
    ]
    if settings.proxy_mode == "rds-proxy":
        pins = [p for p in pinning_items(settings, conninfo_params or {}) if p.verdict == "PINS"]
        problems += [
            Problem("error", "pins-session", f"behind RDS Proxy, {p.item} pin sessions", p.detail)
            for p in pins
        ]
    return problems


def pinning_items(settings: PoolSettings, params: Mapping[str, object]) -> list[PinItem]:
    """What would pin a session to its client behind RDS Proxy, and what the pool does."""
    items: list[PinItem] = []
    if str(params.get("options") or "").strip():
        items.append(
            PinItem(
                "startup options",
                "PINS",
                "the connection string sets `options` (session parameters at startup):"
                " set them on the role or in the DB parameter group instead",
            )
        )
    else:
        items.append(
            PinItem(
                "startup options",
                "ok",
                "the pool sends no `options` behind RDS Proxy (its server-side timeouts are"
                " not set per session in this mode: set them on the role or parameter group)",
            )
        )
    items.append(
        PinItem(
            "session SET",
            "ok",
            "the pool itself never runs a session SET; in your code use SET LOCAL"
            " inside a transaction, never a plain SET",
        )
    )
    function = settings.deadline_function
    if function is not None:
        items.append(
            PinItem(
                "deadline bound",
                "ok",
                f"deadline_function={function}: statements bounded by the deadline"
                f" (make_handler(statement_timeout=True)) call {function}(ms), whose"
                " SET LOCAL RDS Proxy does not see",
            )
        )
    else:
        items.append(
            PinItem(
                "deadline bound",
                "your code",
                "deadline_function is not set: statements bounded by the deadline"
                " (make_handler(statement_timeout=True)) send SET LOCAL or set_config(),"
                " which pin; set deadline_function (docs/managed_postgres.md)",
            )
        )
    if settings.prepare_threshold is None:
        items.append(
            PinItem(
                "prepared statements",
                "ok",
                "prepare_threshold=none: psycopg never prepares statements on the server",
            )
        )
    else:
        items.append(
            PinItem(
                "prepared statements",
                "PINS",
                f"prepare_threshold={settings.prepare_threshold}: psycopg prepares a"
                " statement after that many runs; set prepare_threshold=none",
            )
        )
    items.append(
        PinItem(
            "temporary tables",
            "your code",
            "CREATE TEMP TABLE pins until the session ends; the pool cannot undo it for"
            " the proxy. Use ordinary tables or CTEs in requests",
        )
    )
    items.append(
        PinItem(
            "advisory locks",
            "your code",
            "pg_advisory_lock() pins; use pg_advisory_xact_lock() inside a transaction",
        )
    )
    # reset_on_return=always is refused with a proxy mode (see PoolSettings).
    items.append(
        PinItem(
            "session reset",
            "ok",
            "no DISCARD ALL is sent behind RDS Proxy (the proxy resets sessions itself);"
            " the pool restores only the connection's Python-side state",
        )
    )
    return items


def setting_rows(
    settings: PoolSettings, source_of: Callable[[str], tuple[str, bool]]
) -> list[SettingRow]:
    """Every setting in schema order; `source_of(name)` is ``(source, explicit)``."""
    rows = []
    for setting in SCHEMA:
        source, explicit = source_of(setting.name)
        rows.append(SettingRow(setting.name, getattr(settings, setting.name), source, explicit))
    return rows


def fleet_of(
    settings: PoolSettings,
    *,
    explicit: Iterable[str],
    on_lambda: bool,
    workers_per_environment: int,
    environments: int | None,
) -> tuple[Fleet, str]:
    """The fleet to count, and a note when its ``max_size`` is not the one in force here.

    A fleet is Lambda's: checked from elsewhere, a ``max_size`` left to its default
    counts as its default on Lambda, not as the default of the machine running the check.
    """
    max_size, note = settings.max_size, ""
    if not on_lambda and "max_size" not in set(explicit):
        there = PoolSettings.load(
            {"proxy_mode": settings.proxy_mode}, environ={"AWS_LAMBDA_FUNCTION_NAME": "check"}
        ).max_size
        if there != max_size:
            note = f"max_size {there} is its default on Lambda ({max_size} here)"
            max_size = there
    return Fleet(max_size, workers_per_environment, environments), note


# -- the check against the server ----------------------------------------------------


def check_database(
    pool: ServerlessPool,
    *,
    name: str,
    target: str,
    settings: Sequence[SettingRow],
    fleet: Fleet,
    fleet_note: str = "",
    on_lambda: bool,
    conninfo_params: Mapping[str, object] | None = None,
    secrets: Iterable[str] = (),
) -> DatabaseReport:
    """Connect once through `pool`; read the server, the session and the budget.

    `settings` are the rows to show (the values the pool runs with, and their sources);
    `fleet` is what to count against the budget. Error text is stripped of `secrets`.
    """
    report = DatabaseReport(
        name=name, target=target, settings=list(settings), fleet=fleet, fleet_note=fleet_note
    )
    report.problems += settings_problems(
        pool.settings,
        explicit=[row.name for row in settings if row.explicit],
        on_lambda=on_lambda,
        conninfo_params=conninfo_params,
    )
    if pool.settings.proxy_mode == "rds-proxy":
        report.pinning = pinning_items(pool.settings, conninfo_params or {})
    try:
        with pool.connection() as conn:
            row = conn.execute(_SESSION_QUERY, prepare=False).fetchone()
            assert row is not None
            report.server_version = str(row[0])
            report.session = dict(zip(_SESSION_NAMES, row[1:], strict=True))
            report.session["prepare_threshold"] = conn.prepare_threshold
            report.session["autocommit"] = conn.autocommit
            try:
                report.budget = read_budget(conn)
            except psycopg.Error as err:
                report.problems.append(
                    Problem(
                        "warning",
                        "budget-unreadable",
                        f"could not read the connection budget: {_reason(err, secrets)}",
                    )
                )
    except psycopg.Error as err:
        report.problems.insert(
            0, Problem("error", "cannot-connect", f"cannot connect: {_reason(err, secrets)}")
        )
        return report
    if report.budget is not None and fleet.fits(report.budget) is False:
        report.problems.insert(
            0,
            Problem(
                "error",
                "budget",
                f"the fleet needs {fleet.connections} connections ({_fleet_product(fleet)}),"
                f" the server allows {report.budget.usable}",
                _FLEET_HINT,
            ),
        )
    return report


def _reason(err: BaseException, secrets: Iterable[str]) -> str:
    text = " ".join(str(err).split())
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _fleet_product(fleet: Fleet) -> str:
    workers = fleet.workers_per_environment
    return (
        f"max_size {fleet.max_size} x {workers} worker{'' if workers == 1 else 's'} per"
        f" environment x {fleet.environments} environments"
    )


# -- configuration checks at init (make_handler) --------------------------------------

_configuration_checks: list[Callable[[], list[Problem]]] = []


def register_configuration_check(
    check: Callable[[], list[Problem]],
) -> Callable[[], list[Problem]]:
    """Add `check` to those `configuration_problems()` runs (once, however often added)."""
    if check not in _configuration_checks:
        _configuration_checks.append(check)
    return check


def configuration_problems() -> list[Problem]:
    """The problems of the registered checks, then of every live pool's settings.

    A check that raises is reported as an error rather than raised: this runs in a
    function's init, where a crash would only make Lambda retry the init.
    """
    problems: list[Problem] = []
    for check in list(_configuration_checks):
        try:
            problems += check()
        except Exception as err:  # noqa: BLE001 (reported, see above)
            problems.append(Problem("error", "configuration", f"{type(err).__name__}: {err}"))
    on_lambda = running_on_lambda()
    for pool in lifecycle.live_pools():
        found = settings_problems(pool.settings, on_lambda=on_lambda)
        problems += [
            Problem(p.level, p.code, f"pool {pool.name!r}: {p.message}", p.hint) for p in found
        ]
    return problems


def log_configuration_problems() -> list[Problem]:
    """Log each of `configuration_problems()` (errors as errors); returns them."""
    problems = configuration_problems()
    for problem in problems:
        hint = f" ({problem.hint})" if problem.hint else ""
        logger.log(
            logging.ERROR if problem.level == "error" else logging.WARNING,
            "configuration %s [%s]: %s%s",
            problem.level, problem.code, problem.message, hint,
        )  # fmt: skip
    return problems


# -- text ----------------------------------------------------------------------------


def show_value(value: object) -> str:
    """A setting's value as the reports print it (``true``, ``none``, ``900``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fleet_line(fleet: Fleet, budget: Budget) -> str:
    workers = fleet.workers_per_environment
    if fleet.environments is None:
        return (
            f"at max_size {fleet.max_size} x {workers} worker{'' if workers == 1 else 's'}"
            f" per environment = {fleet.per_environment} connections per environment, up to"
            f" {fleet.environments_that_fit(budget)} environments fit in {budget.usable}"
            " usable slots (state the expected environments to check a fleet)"
        )
    verdict = "fits" if fleet.fits(budget) else "DOES NOT FIT"
    sign = "<=" if fleet.fits(budget) else ">"
    return (
        f"{verdict}: {_fleet_product(fleet)} = {fleet.connections} connections {sign}"
        f" {budget.usable} usable slots"
    )


def _problem_lines(problem: Problem, *, indent: str) -> list[str]:
    # One line per problem (and one for its hint), unwrapped: easy to grep in a log.
    lines = [f"{indent}{problem.level + ':':<9} [{problem.code}] {problem.message}"]
    if problem.hint:
        lines.append(f"{indent}{'':9} hint: {problem.hint}")
    return lines


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
