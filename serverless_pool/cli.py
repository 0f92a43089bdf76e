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
        help="simulate a Lambda fleet with more instances than database slots",
        description="Run Lambda instances on the local emulator (the real awslambdaric,"
        " frozen with SIGSTOP between invocations, shut down as Lambda does) against few"
        " database slots, and compare connect-per-request, a module-level connection,"
        " ServerlessPool with and without its shutdown extension, and ServerlessPool"
        " behind PgBouncer, on the same traffic, in three shapes of fleet. Without --url"
        " a throwaway PostgreSQL (and PgBouncer) is started on 127.0.0.1. Linux only;"
        " needs serverless-pool[fleet], and [plot] for --plot.",
        epilog="Exit codes: 0 every ServerlessPool run served every request within the"
        " budget, 1 one did not (or the simulation failed), 2 bad input.",
    )
    fleet.add_argument(
        "--quick", action="store_true", help="a small fleet: the same story in half the time"
    )
    fleet.add_argument(
        "--shape",
        action="append",
        choices=("burst", "scale", "managed"),
        help="run only this shape of fleet (repeatable; default all three): burst ="
        " on-demand, 3 instances per slot; scale = 6 per slot; managed = Lambda Managed"
        " Instances",
    )
    fleet.add_argument(
        "--strategy",
        action="append",
        choices=(
            "connect-per-request",
            "module-level",
            "serverless-pool",
            "serverless-pool-no-extension",
            "serverless-pool-pgbouncer",
        ),
        help="run only this strategy, in every shape (repeatable; default: each shape's own)",
    )
    fleet.add_argument(
        "--budget",
        type=_positive_int("--budget"),
        metavar="B",
        help="usable slots of the throwaway server (default 10, quick 3)",
    )
    fleet.add_argument(
        "--instances",
        type=_positive_int("--instances"),
        metavar="N",
        help="on-demand instances of the burst shape (default 3 x budget; scale has 2 x N)",
    )
    fleet.add_argument(
        "--waves",
        type=_positive_int("--waves"),
        metavar="W",
        help="waves of traffic, the fleet frozen in between (default 2)",
    )
    fleet.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="the server's idle_session_timeout (default 0.5, quick 0.3; 900 s is"
        " ServerlessPool's default on Lambda: time is compressed here)",
    )
    fleet.add_argument(
        "--no-snapstart",
        action="store_true",
        help="start every on-demand instance with a full init instead of restoring it"
        " from a SnapStart snapshot (slower: about 0.4 s of CPU per instance)",
    )
    fleet.add_argument(
        "--url",
        help="run against this server instead of a throwaway one; the budget is its free"
        " slots, the PgBouncer strategy is skipped (use a server nothing else depends on)",
    )
    fleet.add_argument("--json", action="store_true", help="print the report as JSON")
    fleet.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw server connections over time and latency percentiles to this PNG"
        " (needs matplotlib: serverless-pool[plot])",
    )
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

    from .fleet import FleetParams, format_tables, simulate
    from .fleet.progress import ProgressBar

    params = FleetParams.quick() if args.quick else FleetParams()
    changes: dict[str, object] = {}
    if args.budget is not None:
        if args.url:
            raise UsageError(
                "--budget sizes the throwaway server; with --url the budget is that"
                " server's free slots"
            )
        changes["budget"] = args.budget
    for option in ("instances", "waves"):
        if getattr(args, option) is not None:
            changes[option] = getattr(args, option)
    if args.idle_timeout is not None:
        changes["idle_timeout"] = args.idle_timeout
    if args.shape:
        changes["shapes"] = tuple(dict.fromkeys(args.shape))
    if args.strategy:
        changes["strategies"] = tuple(dict.fromkeys(args.strategy))
    if args.no_snapstart:
        changes["snapstart"] = False
    try:
        params = params.replace(**changes)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        # Said now, not after a minute of running.
        raise UsageError(f"--plot: the folder of {args.plot!r} does not exist")
    missing = _fleet_requirements(plot=bool(args.plot))
    if missing:
        print(f"serverless-pool fleet: {missing}", file=sys.stderr)
        return PROBLEM
    secret = _password_of(args.url) if args.url else None
    bar = ProgressBar(sys.stderr)
    try:
        report = simulate(params, url=args.url, progress=bar)
    except ValueError as err:
        raise UsageError(_scrub(str(err), secret)) from None
    except Exception as err:  # noqa: BLE001 (one clear line instead of a traceback)
        message = _scrub(" ".join(str(err).split()), secret)
        print(f"serverless-pool fleet: failed: {type(err).__name__}: {message}", file=sys.stderr)
        return PROBLEM
    finally:
        bar.close()

    data = report.as_dict()
    if args.json:
        print(json.dumps(data, indent=1), file=out)
    else:
        p = report.params
        print(f"server: {report.server}; fleet budget {report.budget} slots", file=out)
        print(
            f"traffic: {p.waves} waves, frozen {p.pause:g} s in between; users arrive over"
            f" {p.spread:g} s and send {p.burst} requests {p.think * 1000:g} ms apart;"
            f" each request: {p.db_time * 1000:g} ms of database work, then"
            f" {p.app_time * 1000:g} ms of other work; function timeout"
            f" {p.request_timeout:g} s; new on-demand instances"
            f" {'restored from a SnapStart snapshot' if p.snapstart else 'run a full init'}",
            file=out,
        )
        print("", file=out)
        print(format_tables(data["shapes"], report.budget), file=out, end="")
        for skipped in report.skipped:
            print(f"skipped: {skipped} (needs the throwaway server)", file=out)
    if args.plot:
        from .fleet.plot import render

        render(data, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    pooled = [r for r in report.runs() if r.strategy.startswith("serverless-pool")]
    if any(r.errors or not r.within_budget or r.crashes for r in pooled):
        return PROBLEM
    return OK


def _fleet_requirements(*, plot: bool) -> str | None:
    """What the fleet needs and this installation lacks, as a one-line message."""
    import importlib.util

    if not sys.platform.startswith("linux"):
        return "the Lambda emulator watches its processes through /proc: Linux only"
    lacking = [m for m in ("awslambdaric", "apig_wsgi") if importlib.util.find_spec(m) is None]
    if lacking:
        return (
            f"the instances run the AWS runtime client on the local emulator, which needs"
            f" {' and '.join(lacking)}: pip install 'serverless-pool[fleet]'"
        )
    if plot and importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib: pip install 'serverless-pool[plot]'"
    return None


if __name__ == "__main__":
    sys.exit(main())
