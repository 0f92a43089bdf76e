"""The ``serverless-pool`` command: check a database and its connection budget, show
the effective settings, and run the fleet simulation.

Exit codes, for every subcommand:

- 0: all is well (the check passed; the fleet's ServerlessPool run had no error).
- 1: the command ran and found a problem: the database could not be reached, the
  fleet does not fit the connection budget, the pool's settings would pin sessions
  behind RDS Proxy, or the simulated ServerlessPool fleet failed requests.
- 2: bad input: an unknown option, a setting out of range, no database given.

Imports beyond the standard library happen inside the subcommands, so ``--help`` and
argument errors stay fast. Passwords are never printed: the target is shown as host,
port, database and user, and any error text is scrubbed of the password.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .settings import PoolSettings, Setting

__all__ = ["main"]

OK, PROBLEM, BAD_INPUT = 0, 1, 2
URL_ENV = "SERVERLESS_POOL_DATABASE_URL"


class UsageError(Exception):
    """Bad input from the command line or the environment: exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        command: Callable[[argparse.Namespace, TextIO], int] = args.run
        return command(args, out)
    except UsageError as err:
        print(f"serverless-pool {args.command}: error: {err}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return PROBLEM
    except BrokenPipeError:
        # The reader (e.g. `head`) went away: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK


# -- the parser ------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serverless-pool",
        description="PostgreSQL connections for serverless functions: check a database"
        " and its connection budget, show settings, simulate a fleet.",
        epilog="Exit codes: 0 all is well, 1 a problem was found, 2 bad input.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="connect once and check the server, the settings and the connection budget",
        description="Connect once through a ServerlessPool; print the server version, the"
        " effective settings, what the pool's session runs with, the connection budget and"
        " whether the fleet fits in it. The same report as manage.py serverless_pool check"
        " and flask serverless-pool check.",
        epilog="Exit codes: 0 the check passed, 1 a problem was found (cannot connect,"
        " the fleet does not fit, settings that pin RDS Proxy sessions), 2 bad input.",
    )
    _add_url(check)
    check.add_argument(
        "--expected-environments",
        "--expected-instances",
        dest="environments",
        type=_positive_int("--expected-environments"),
        metavar="N",
        help="how many Lambda execution environments (instances) may run at once: the"
        " function's (reserved) concurrency on on-demand Lambda",
    )
    check.add_argument(
        "--workers-per-environment",
        dest="workers",
        type=_positive_int("--workers-per-environment"),
        metavar="N",
        help="worker processes per environment, each with its own pool: AWS_LAMBDA_MAX_"
        "CONCURRENCY on Lambda Managed Instances (default: read from that variable, else 1)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_setting_options(check)
    check.set_defaults(run=_run_check)

    settings = sub.add_parser(
        "settings",
        help="print every setting with its value, where it came from and what it does",
        description="Print every setting with its effective value, its source (default,"
        " environment variable or argument) and its documentation.",
    )
    _add_setting_options(settings)
    settings.set_defaults(run=_run_settings)

    fleet = sub.add_parser(
        "fleet",
        help="simulate a fleet with 3x more instances than database slots",
        description="Run many Lambda-like instances (OS processes) against few database"
        " slots and compare connect-per-request, a module-level connection and"
        " ServerlessPool on the same traffic. Without --url a throwaway PostgreSQL is"
        " started on 127.0.0.1 (needs the PostgreSQL server binaries).",
        epilog="Exit codes: 0 ServerlessPool had no error within the budget, 1 it had"
        " errors or exceeded the budget, 2 bad input.",
    )
    fleet.add_argument("--quick", action="store_true", help="a smaller, faster fleet (tests)")
    fleet.add_argument(
        "--url",
        help="run against this server instead of a throwaway one; the budget is its free"
        " slots (use a server nothing else depends on)",
    )
    fleet.add_argument(
        "--budget",
        type=_positive_int("--budget"),
        metavar="B",
        help="usable slots of the throwaway server (default 10, quick 5)",
    )
    fleet.add_argument(
        "--instances",
        type=_positive_int("--instances"),
        metavar="N",
        help="instances in the fleet (default 3 x budget)",
    )
    fleet.add_argument(
        "--waves",
        type=_positive_int("--waves"),
        metavar="W",
        help="bursts of traffic (default 4, quick 2)",
    )
    fleet.add_argument(
        "--strategy",
        action="append",
        choices=("connect-per-request", "module-level", "serverless-pool"),
        help="run only this strategy (repeatable; default all three)",
    )
    fleet.add_argument("--json", action="store_true", help="print the results as JSON")
    fleet.set_defaults(run=_run_fleet)
    return parser


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help=f"the database: a postgresql:// URL or a libpq connection string"
        f" (default: ${URL_ENV})",
    )


def _add_setting_options(parser: argparse.ArgumentParser) -> None:
    from .settings import SCHEMA

    group = parser.add_argument_group(
        "settings", "any pool setting; otherwise SERVERLESS_POOL_* variables, then defaults"
    )
    for setting in SCHEMA:
        group.add_argument(
            _flag(setting),
            dest=f"setting_{setting.name}",
            metavar="VALUE",
            help=setting.doc.replace("%", "%%"),
        )


def _flag(setting: Setting) -> str:
    return "--" + setting.name.replace("_", "-")


def _positive_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
        return value

    parse.__name__ = flag
    return parse


# -- settings --------------------------------------------------------------------------


def _given_settings(args: argparse.Namespace) -> dict[str, str]:
    """Settings given as options, each validated so the error names its option."""
    from .settings import SCHEMA

    given: dict[str, str] = {}
    for setting in SCHEMA:
        raw = getattr(args, f"setting_{setting.name}", None)
        if raw is None:
            continue
        try:
            setting.parse(raw)
        except ValueError as err:
            raise UsageError(f"{_flag(setting)}: {err}, got {raw!r}") from None
        given[setting.name] = raw
    return given


def _load_settings(given: Mapping[str, str]) -> PoolSettings:
    from .errors import SettingsError
    from .settings import PoolSettings

    try:
        return PoolSettings.load(
            given, environ=os.environ, source="option", spell=lambda n: "--" + n.replace("_", "-")
        )
    except SettingsError as err:
        raise UsageError(str(err)) from None


def _source(setting: Setting, given: Mapping[str, str]) -> str:
    if setting.name in given:
        return f"argument {_flag(setting)}"
    if setting.env_var in os.environ:
        return f"environment {setting.env_var}"
    return f"default ({setting.default_doc})" if setting.default_doc else "default"


def _setting_lines(values: Mapping[str, object], given: Mapping[str, str]) -> list[str]:
    """``name  value  source`` for every setting, in schema order, aligned."""
    from .checks import show_value
    from .settings import SCHEMA

    shown = [(s.name, show_value(values[s.name]), _source(s, given)) for s in SCHEMA]
    name_width = max(len(name) for name, _, _ in shown)
    value_width = max(len(value) for _, value, _ in shown)
    return [f"{n:<{name_width}}  {v:<{value_width}}  {src}" for n, v, src in shown]


def _run_settings(args: argparse.Namespace, out: TextIO) -> int:
    from .settings import SCHEMA

    given = _given_settings(args)
    settings = _load_settings(given).as_dict()
    for setting, line in zip(SCHEMA, _setting_lines(settings, given), strict=True):
        print(line, file=out)
        doc = textwrap.fill(
            setting.doc, 88, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
        )
        print(doc, file=out)
    return OK


# -- check -----------------------------------------------------------------------------


def _run_check(args: argparse.Namespace, out: TextIO) -> int:
    url = args.url or os.environ.get(URL_ENV)
    if not url:
        raise UsageError(f"no database given: pass --url or set {URL_ENV}")
    given = _given_settings(args)
    settings = _load_settings(given)
    secret = _password_of(url)

    from .checks import Report, check_database, fleet_of, setting_rows
    from .conninfo import describe_conninfo, parse_conninfo
    from .errors import SettingsError
    from .pool import ServerlessPool
    from .settings import SCHEMA, running_on_lambda, workers_per_environment

    try:
        params = parse_conninfo(url)
    except SettingsError as err:
        raise UsageError(_scrub(str(err), secret)) from None
    by_name = {s.name: s for s in SCHEMA}

    def source_of(name: str) -> tuple[str, bool]:
        setting = by_name[name]
        return _source(setting, given), name in given or setting.env_var in os.environ

    rows = setting_rows(settings, source_of)
    on_lambda = running_on_lambda(os.environ)
    fleet, note = fleet_of(
        settings,
        explicit=[row.name for row in rows if row.explicit],
        on_lambda=on_lambda,
        workers_per_environment=args.workers or workers_per_environment(os.environ),
        environments=args.environments,
    )
    with ServerlessPool(url, settings=settings, environ=os.environ) as pool:
        database = check_database(
            pool,
            name=settings.name,
            target=describe_conninfo(url),
            settings=rows,
            fleet=fleet,
            fleet_note=note,
            on_lambda=on_lambda,
            conninfo_params=params,
            secrets=[secret] if secret else [],
        )
    report = Report([database])
    print(report.to_json() if args.json else report.render(), file=out)
    return report.exit_code


def _password_of(conninfo: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(conninfo).get("password")
    except Exception:  # noqa: BLE001 (an unparsable string has no password to hide)
        return None
    return str(password) if password else None


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


# -- fleet -----------------------------------------------------------------------------


def _run_fleet(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from .fleet import STRATEGIES, FleetParams, format_table, simulate

    params = FleetParams.quick() if args.quick else FleetParams()
    changes: dict[str, object] = {}
    if args.budget is not None:
        changes["budget"] = args.budget
        changes["instances"] = 3 * args.budget
    if args.instances is not None:
        changes["instances"] = args.instances
    if args.waves is not None:
        changes["waves"] = args.waves
    try:
        params = params.replace(**changes)
    except ValueError as err:
        raise UsageError(str(err)) from None
    strategies = tuple(args.strategy or STRATEGIES)
    secret = _password_of(args.url) if args.url else None

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        report = simulate(
            params,
            url=args.url,
            strategies=strategies,
            progress=progress,
            scale_to_budget=args.instances is None,
        )
    except ValueError as err:
        raise UsageError(_scrub(str(err), secret)) from None
    except Exception as err:  # noqa: BLE001 (one clear line instead of a traceback)
        message = _scrub(" ".join(str(err).split()), secret)
        print(f"serverless-pool fleet: failed: {type(err).__name__}: {message}", file=sys.stderr)
        return PROBLEM

    if args.json:
        print(json.dumps(report.as_dict(), indent=2), file=out)
    else:
        p = report.params
        print(f"server: {report.server}; fleet budget {p.budget} slots", file=out)
        print(
            f"fleet: {p.instances} instances x {p.requests_per_instance} requests"
            f" ({p.waves} waves every {p.wave_interval:g} s arriving over {p.spread:g} s,"
            f" bursts of {p.burst} with {p.think * 1000:g} ms think time,"
            f" {p.service * 1000:g} ms of database work each)",
            file=out,
        )
        print(format_table(report.results), file=out)
    pooled = [r for r in report.results if r.strategy == "serverless-pool"]
    if any(r.errors or not r.within_budget or r.crashes for r in pooled):
        return PROBLEM
    return OK


if __name__ == "__main__":
    sys.exit(main())
