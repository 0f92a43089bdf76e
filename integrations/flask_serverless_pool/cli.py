"""``flask serverless-pool``: check the database and its connection budget, show the
settings and the stats.

``check`` prints the report every check command prints (`serverless_pool.checks`): the
same problems, words and ``--json`` as ``serverless-pool check`` and ``manage.py
serverless_pool check``. The group is also a ``flask.commands`` entry point, so it is
found before the app is loaded, and a bad setting in the config or the environment
(which stops the app from loading) is one clear line, not a traceback. Nothing printed
here ever includes a password.
"""

from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo

from serverless_pool.budget import Fleet
from serverless_pool.checks import (
    DatabaseReport,
    Report,
    SettingRow,
    check_database,
    fleet_of,
    setting_rows,
)
from serverless_pool.conninfo import parse_conninfo
from serverless_pool.errors import SettingsError
from serverless_pool.settings import SCHEMA, running_on_lambda, workers_per_environment

from .config import CONFIG_KEYS
from .extension import PoolState, get_state

__all__ = ["pool_cli"]

_ENV_VARS = {setting.name: key for key, setting in CONFIG_KEYS.items()}
_DEFAULT_DOCS = {setting.name: setting.default_doc for setting in SCHEMA}


class BadSettings(click.ClickException):
    """The app's serverless-pool settings are wrong: exit status 2, as for bad input."""

    exit_code = 2


pool_cli = click.Group(
    "serverless-pool", help="Check the database and show serverless-pool settings and stats."
)


@pool_cli.command("check")
@click.option(
    "--environments",
    "--instances",
    "environments",
    type=click.IntRange(min=1),
    default=None,
    help="Lambda execution environments (instances) that may run at once: the function's"
    " (reserved) concurrency. Fails if their pools cannot all fit in the server's"
    " connection slots.",
)
@click.option(
    "--workers-per-environment",
    "workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes per environment, each with its own pool: AWS_LAMBDA_MAX_"
    "CONCURRENCY on Lambda Managed Instances (default: read from that variable, else 1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(environments: int | None, workers: int | None, as_json: bool) -> None:
    """Connect through the pool; report the server, the session, the budget and the fleet."""
    state = get_state(_app())
    pool = state.pool
    conninfo = state.config.conninfo
    params = parse_conninfo(conninfo)
    password = params.get("password")
    rows = _rows(state)
    on_lambda = running_on_lambda()
    fleet, note = fleet_of(
        pool.settings,
        explicit=[row.name for row in rows if row.explicit],
        on_lambda=on_lambda,
        workers_per_environment=workers or workers_per_environment(),
        environments=environments,
    )
    database = check_database(
        pool,
        name=pool.name,
        target=state.target,
        settings=rows,
        fleet=fleet,
        fleet_note=note,
        on_lambda=on_lambda,
        conninfo_params=params,
        secrets=[str(password)] if password else [],
    )
    report = Report([database])
    click.echo(report.to_json() if as_json else report.render())
    if not report.ok:
        raise click.exceptions.Exit(report.exit_code)


@pool_cli.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def settings_command(as_json: bool) -> None:
    """Show the pool's settings and where each came from (config, environment, default)."""
    state = get_state(_app())
    pool = state.pool
    database = DatabaseReport(
        name=pool.name,
        target=state.target,
        settings=_rows(state),
        fleet=Fleet(pool.settings.max_size, workers_per_environment()),
    )
    if as_json:
        data = database.as_dict()
        shown = {key: data[key] for key in ("name", "target", "settings")}
        click.echo(json.dumps(shown, indent=2))
        return
    for line in database.lines():
        click.echo(line)


@pool_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats_command(as_json: bool) -> None:
    """Show this process's pool counters and sizes."""
    counts = get_state(_app()).pool.stats()
    if as_json:
        click.echo(json.dumps(counts, indent=2, sort_keys=True))
        return
    for key in sorted(counts):
        click.echo(f"{key}: {counts[key]}")


def _app() -> Flask:
    """The app the command runs for, loaded here when Flask has not loaded it yet."""
    if current_app:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return app
    ctx = click.get_current_context()
    try:
        app = ctx.ensure_object(ScriptInfo).load_app()
    except SettingsError as err:
        raise BadSettings(f"serverless-pool settings: {err}") from None
    ctx.with_resource(app.app_context())
    return app


def _rows(state: PoolState) -> list[SettingRow]:
    sources = state.config.sources

    def source_of(name: str) -> tuple[str, bool]:
        source = sources.get(name, "default")
        if source == "config":
            return f"config {_ENV_VARS[name]}", True
        if source == "environment":
            return f"environment {_ENV_VARS[name]}", True
        if source == "app name":
            return "the app's name", False
        doc = _DEFAULT_DOCS.get(name)
        return (f"default ({doc})" if doc else "default"), False

    return setting_rows(state.pool.settings, source_of)
