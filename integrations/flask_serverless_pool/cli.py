"""``flask serverless-pool``: check the database and its connection budget, show the
settings and the stats. Nothing printed here ever includes a password: the target is
shown through `describe_conninfo`, and settings hold no secrets.
"""

from __future__ import annotations

import json

import click
import psycopg
from flask import current_app
from flask.cli import AppGroup

from serverless_pool.budget import read_budget
from serverless_pool.conninfo import redact

from .extension import get_state

__all__ = ["pool_cli"]

pool_cli = AppGroup(
    "serverless-pool", help="Check the database and show serverless-pool settings and stats."
)


@pool_cli.command("check")
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=None,
    help="Instances (e.g. Lambda concurrency) expected to run at once; fails if their"
    " pools cannot all fit in the server's connection slots.",
)
def check_command(instances: int | None) -> None:
    """Connect through the pool, then report the server's connection budget."""
    state = get_state(current_app)
    pool = state.pool
    click.echo(f"database: {state.target}")
    try:
        with pool.connection() as conn:
            version = conn.execute("SHOW server_version").fetchone()
            budget = read_budget(conn)
    except psycopg.Error as err:
        # Messages from the core are already free of secrets; libpq's are redacted.
        raise click.ClickException(f"cannot use the database: {_safe(err)}") from None
    click.echo(f"server version: {version[0] if version else 'unknown'}")
    click.echo(
        f"max_connections: {budget.max_connections} (reserved: {budget.reserved},"
        f" usable by this role: {budget.usable}, in use now: {budget.in_use},"
        f" free now: {budget.free})"
    )
    max_size = pool.settings.max_size
    click.echo(f"pool max_size per instance: {max_size}")
    click.echo(f"instances that fit: {budget.usable // max_size}")
    if instances is not None:
        if not budget.fits(max_size, instances):
            raise click.ClickException(
                f"{instances} instances x max_size {max_size} = {instances * max_size}"
                f" connections, more than the {budget.usable} this role can get;"
                " lower the concurrency or max_size, or put a proxy in front"
            )
        click.echo(f"ok: {instances} instances x max_size {max_size} fit in {budget.usable}")
    click.echo("ok")


@pool_cli.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def settings_command(as_json: bool) -> None:
    """Show the pool's settings and where each came from (config, environment, default)."""
    state = get_state(current_app)
    values = state.pool.settings.as_dict()
    sources = state.config.sources
    if as_json:
        shown = {"database": state.target, "settings": values, "sources": dict(sources)}
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    click.echo(f"database: {state.target}")
    width = max(len(name) for name in values)
    for name, value in values.items():
        click.echo(f"{name:<{width}}  {value!s:<16}  ({sources.get(name, 'default')})")


@pool_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats_command(as_json: bool) -> None:
    """Show this process's pool counters and sizes."""
    counts = get_state(current_app).pool.stats()
    if as_json:
        click.echo(json.dumps(counts, indent=2, sort_keys=True))
        return
    for key in sorted(counts):
        click.echo(f"{key}: {counts[key]}")


def _safe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, psycopg.OperationalError) and '"' in text:
        return redact(text)
    return text
