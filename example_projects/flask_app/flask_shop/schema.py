"""Schema creation: ``flask --app flask_shop init-db``, or `create_schema()` from code."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import click
import psycopg
from flask.cli import with_appcontext

from .db import db


def create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the shop's tables if they do not exist, in one transaction."""
    sql = files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
    with conn.transaction():
        conn.execute(sql)


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the shop's tables (safe to run again)."""
    with db.connection() as conn:
        create_schema(conn)
    click.echo("tables shop_product and shop_order are ready")
