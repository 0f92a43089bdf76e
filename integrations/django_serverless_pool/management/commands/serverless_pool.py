"""``manage.py serverless_pool show|check``: what each pooled alias runs with; the check.

``check`` prints the report every check command prints (`serverless_pool.checks`): the
same problems, words and ``--json`` as ``serverless-pool check`` and ``flask
serverless-pool check``, with Django's own problems (its system checks of this app) on
top. Nothing printed here ever contains a password.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from serverless_pool import SettingsError
from serverless_pool.checks import Report

from ...checks import django_problems, pooled_aliases
from ...release import pool_of
from ...report import database_report


class Command(BaseCommand):
    help = (
        "show: the settings each pooled database alias runs with (and where each came"
        " from) and its pool's stats. check: connect, and report the server, the"
        " session, the connection budget and the fleet, as serverless-pool check does"
        " (exit status 1 on an error)."
    )
    requires_system_checks = ()

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["show", "check"])
        parser.add_argument(
            "--database", action="append", dest="databases", help="alias (repeatable)"
        )
        parser.add_argument(
            "--workers-per-environment",
            type=int,
            metavar="N",
            help="worker processes per execution environment (AWS_LAMBDA_MAX_CONCURRENCY"
            " on Lambda Managed Instances); default: SERVERLESS_POOL's"
            " workers_per_environment, else that variable, else 1",
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
        workers = options["workers_per_environment"]
        if workers is not None and workers < 1:
            raise CommandError(f"--workers-per-environment: must be at least 1, got {workers}")
        connect = options["action"] == "check"
        try:
            databases = [database_report(a, workers=workers, connect=connect) for a in aliases]
        except SettingsError as err:
            raise CommandError(str(err)) from None
        if not connect:
            self._show(databases, as_json=options["json"])
            return
        report = Report(databases, django_problems())
        self.stdout.write(report.to_json() if options["json"] else report.render())
        if not report.ok:
            raise CommandError("the check found an error", returncode=1)

    def _show(self, databases: list[Any], *, as_json: bool) -> None:
        shown = []
        for database in databases:
            data = database.as_dict()
            shown.append(
                {
                    "name": data["name"],
                    "target": data["target"],
                    "settings": data["settings"],
                    "stats": pool_of(database.name).stats(),
                }
            )
        if as_json:
            self.stdout.write(json.dumps(shown, indent=2))
            return
        for database, data in zip(databases, shown, strict=True):
            for line in database.lines():
                self.stdout.write(line)
            self.stdout.write("  stats:")
            for name, value in sorted(data["stats"].items()):
                self.stdout.write(f"    {name} = {value}")
