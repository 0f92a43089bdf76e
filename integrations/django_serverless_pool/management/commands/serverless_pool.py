"""``manage.py serverless_pool show|check``: pool settings and stats, database and budget.

Nothing printed here ever contains a password: settings hold none, and the database
target is described with `serverless_pool.conninfo.describe_conninfo`-style fields.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from serverless_pool import SettingsError
from serverless_pool.budget import read_budget

from ...checks import pooled_aliases
from ...conf import conf
from ...release import pool_of


class Command(BaseCommand):
    help = (
        "show: the pool settings and stats of each pooled database alias. "
        "check: connect, and compare the connection budget with max_size × "
        "expected_concurrency (exit status 1 if it does not fit or the database fails)."
    )
    requires_system_checks = ()

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["show", "check"])
        parser.add_argument(
            "--database", action="append", dest="databases", help="alias (repeatable)"
        )
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = options["databases"] or pooled_aliases()
        unknown = sorted(set(aliases) - set(pooled_aliases()))
        if unknown:
            raise CommandError(
                f"not a database using django_serverless_pool's ENGINE: {', '.join(unknown)}"
            )
        if not aliases:
            raise CommandError("no database uses django_serverless_pool's ENGINE")
        try:
            report = {alias: self._describe(alias, options["action"]) for alias in aliases}
        except SettingsError as err:
            raise CommandError(str(err)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            for alias, data in report.items():
                self._print(alias, data)
        if options["action"] == "check" and not all(d["ok"] for d in report.values()):
            raise CommandError("the database check failed", returncode=1)

    def _describe(self, alias: str, action: str) -> dict[str, Any]:
        wrapper = connections[alias]
        sd = wrapper.settings_dict
        data: dict[str, Any] = {
            "target": {
                "host": sd["HOST"] or "(libpq default)",
                "port": sd["PORT"] or "(libpq default)",
                "dbname": sd["NAME"],
                "user": sd["USER"] or "(libpq default)",
            },
            "settings": conf.pool_settings(alias).as_dict(),
            "expected_concurrency": conf.expected_concurrency(alias),
        }
        if action == "show":
            data["stats"] = pool_of(alias).stats()
            return data
        pool = pool_of(alias)
        try:
            with pool.connection() as conn:
                row = conn.execute("SELECT current_setting('server_version')").fetchone()
                budget = read_budget(conn)
        except Exception as err:  # noqa: BLE001 (reported, with the exit status)
            data.update(ok=False, error=f"{type(err).__name__}: {err}")
            return data
        instances = data["expected_concurrency"]
        max_size = data["settings"]["max_size"]
        data.update(
            ok=instances is None or budget.fits(max_size, instances),
            server_version=row[0] if row else None,
            budget={
                "max_connections": budget.max_connections,
                "reserved": budget.reserved,
                "in_use": budget.in_use,
                "free": budget.free,
                "usable": budget.usable,
                "role_limit": budget.role_limit,
                "database_limit": budget.database_limit,
            },
            needed=None if instances is None else max_size * instances,
        )
        return data

    def _print(self, alias: str, data: dict[str, Any]) -> None:
        write = self.stdout.write
        target = " ".join(f"{k}={v}" for k, v in data["target"].items())
        write(f"database {alias!r}: {target}")
        write("  settings:")
        for name, value in data["settings"].items():
            write(f"    {name} = {value!r}")
        concurrency = data["expected_concurrency"]
        write(f"    expected_concurrency = {concurrency!r}")
        if "stats" in data:
            write("  stats:")
            for name, value in sorted(data["stats"].items()):
                write(f"    {name} = {value}")
            return
        if not data["ok"] and "error" in data:
            write(self.style.ERROR(f"  database: FAILED ({data['error']})"))
            return
        write(f"  database: ok (PostgreSQL {data['server_version']})")
        budget = data["budget"]
        write(
            f"  budget: max_connections={budget['max_connections']}"
            f" reserved={budget['reserved']} in_use={budget['in_use']}"
            f" free={budget['free']} usable={budget['usable']}"
        )
        if data["needed"] is None:
            write("  fleet: set SERVERLESS_POOL['expected_concurrency'] to check it fits")
        elif data["ok"]:
            write(self.style.SUCCESS(f"  fleet: needs {data['needed']}, fits"))
        else:
            write(self.style.ERROR(f"  fleet: needs {data['needed']}, does NOT fit"))
