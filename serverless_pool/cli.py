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
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .budget import Budget
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
        " effective settings, the connection budget and whether the fleet fits in it.",
        epilog="Exit codes: 0 the check passed, 1 a problem was found (cannot connect,"
        " the fleet does not fit, settings that pin RDS Proxy sessions), 2 bad input.",
    )
    _add_url(check)
    check.add_argument(
        "--expected-instances",
        type=_positive_int("--expected-instances"),
        metavar="N",
        help="how many instances (Lambda concurrency) will run a pool at once",
    )
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
        "--quick", action="store_true", help="a small fleet: the same story in about 20 s"
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


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _setting_lines(values: Mapping[str, object], given: Mapping[str, str]) -> list[str]:
    """``name  value  source`` for every setting, in schema order, aligned."""
    from .settings import SCHEMA

    shown = [(s.name, _show(values[s.name]), _source(s, given)) for s in SCHEMA]
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

    from .conninfo import describe_conninfo, parse_conninfo
    from .errors import SettingsError

    try:
        params = parse_conninfo(url)
    except SettingsError as err:
        raise UsageError(_scrub(str(err), secret)) from None

    print(f"target:   {describe_conninfo(url)}", file=out)
    print("settings:", file=out)
    for line in _setting_lines(settings.as_dict(), given):
        print("  " + line, file=out)

    import psycopg

    from .budget import read_budget
    from .pool import ServerlessPool

    try:
        with (
            ServerlessPool(url, settings=settings, environ=os.environ) as pool,
            pool.connection() as conn,
        ):
            version = conn.execute("SHOW server_version").fetchone()
            budget = read_budget(conn)
    except psycopg.Error as err:
        message = _scrub(" ".join(str(err).split()), secret)
        print(f"server:   UNREACHABLE: {message}", file=out)
        print("result:   FAILED (cannot connect)", file=out)
        return PROBLEM
    print(f"server:   PostgreSQL {version[0] if version else '?'}", file=out)

    problems = _print_budget(out, budget, settings.max_size, args.expected_instances)
    if settings.proxy_mode == "direct" and not settings.idle_session_timeout:
        print(
            "note:     idle_session_timeout is 0: an instance frozen by Lambda keeps its slot"
            " until the server or the network ends the session; set it (900 is the default"
            " on Lambda) so the server takes the slot back",
            file=out,
        )
    for warning in settings.session_state_warnings():
        print(f"warning:  {warning}", file=out)
    if settings.proxy_mode == "rds-proxy":
        problems += _print_pinning(out, settings, params)
    if problems:
        print(f"result:   {len(problems)} problem(s): {'; '.join(problems)}", file=out)
        return PROBLEM
    print("result:   ok", file=out)
    return OK


def _print_budget(out: TextIO, budget: Budget, max_size: int, instances: int | None) -> list[str]:
    def limit(value: int | None) -> str:
        return "none" if value is None else str(value)

    print("budget:", file=out)
    rows = (
        ("max_connections", budget.max_connections),
        ("reserved (superuser)", budget.reserved),
        ("role connection limit", limit(budget.role_limit)),
        ("database connection limit", limit(budget.database_limit)),
        ("usable slots", budget.usable),
        ("in use now (all clients)", budget.in_use),
        ("free now", budget.free),
    )
    for label, value in rows:
        print(f"  {label:<26}  {value}", file=out)
    if instances is None:
        fit = budget.usable // max_size
        print(
            f"fleet:    at max_size={max_size}, up to {fit} instances fit in"
            f" {budget.usable} usable slots (give --expected-instances to check a fleet)",
            file=out,
        )
        return []
    needed = max_size * instances
    if budget.fits(max_size, instances):
        print(
            f"fleet:    fits: max_size {max_size} x {instances} instances = {needed}"
            f" connections <= {budget.usable} usable slots",
            file=out,
        )
        return []
    print(
        f"fleet:    DOES NOT FIT: max_size {max_size} x {instances} instances = {needed}"
        f" connections > {budget.usable} usable slots; lower max_size, cap the function's"
        " reserved concurrency, or put RDS Proxy or PgBouncer in front",
        file=out,
    )
    return [f"the fleet needs {needed} connections, the server allows {budget.usable}"]


def _print_pinning(out: TextIO, settings: PoolSettings, params: Mapping[str, Any]) -> list[str]:
    """What would pin a session to its client behind RDS Proxy, and what the pool does."""
    problems: list[str] = []
    items: list[tuple[str, str, str]] = []

    options = str(params.get("options") or "").strip()
    if options:
        items.append((
            "startup options",
            "PINS",
            "the connection string sets `options` (session parameters at startup):"
            " set them on the role or in the DB parameter group instead",
        ))  # fmt: skip
        problems.append("the connection string sets startup options")
    else:
        items.append((
            "startup options",
            "ok",
            "the pool sends no `options` behind RDS Proxy (its server-side timeouts are"
            " not set per session in this mode: set them on the role or parameter group)",
        ))  # fmt: skip

    items.append((
        "session SET",
        "ok",
        "the pool itself never runs SET or set_config(); in your code use SET LOCAL"
        " inside a transaction, never a plain SET",
    ))  # fmt: skip

    if settings.prepare_threshold is None:
        items.append((
            "prepared statements",
            "ok",
            "prepare_threshold=none: psycopg never prepares statements on the server",
        ))  # fmt: skip
    else:
        items.append((
            "prepared statements",
            "PINS",
            f"prepare_threshold={settings.prepare_threshold}: psycopg prepares a statement"
            " after that many runs; set prepare_threshold=none",
        ))  # fmt: skip
        problems.append(f"prepare_threshold={settings.prepare_threshold} prepares statements")

    items.append((
        "temporary tables",
        "your code",
        "CREATE TEMP TABLE pins until the session ends; the pool cannot undo it for"
        " the proxy. Use ordinary tables or CTEs in requests",
    ))  # fmt: skip
    items.append((
        "advisory locks",
        "your code",
        "pg_advisory_lock() pins; use pg_advisory_xact_lock() inside a transaction",
    ))  # fmt: skip

    # reset_on_return=always is refused with a proxy mode (see PoolSettings).
    items.append((
        "session reset",
        "ok",
        "no DISCARD ALL is sent behind RDS Proxy (the proxy resets sessions itself); the"
        " pool restores only the connection's Python-side state",
    ))  # fmt: skip

    print("rds-proxy pinning (what would pin a session, and what the pool does):", file=out)
    for label, verdict, detail in items:
        print(f"  {label:<20}  {verdict:<9}  {detail}", file=out)
    return problems


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
