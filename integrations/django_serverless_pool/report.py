"""The check report for Django's database aliases: the core's (`serverless_pool.checks`),
fed with what Django's settings say. ``manage.py serverless_pool`` prints it, and the
database system checks (``check --database``) turn its problems into check messages.
"""

from __future__ import annotations

from django.db import connections
from psycopg.conninfo import make_conninfo

from serverless_pool.checks import DatabaseReport, check_database, fleet_of, setting_rows
from serverless_pool.conninfo import describe_conninfo
from serverless_pool.settings import running_on_lambda

from .conf import conf
from .release import pool_of

__all__ = ["database_report", "target_of"]


def database_report(
    alias: str, *, workers: int | None = None, connect: bool = True
) -> DatabaseReport:
    """The report on `alias`: its pool's settings and their sources, and, when
    `connect`, what the server says (version, session, budget, fleet)."""
    pool = pool_of(alias)
    sources = conf.sources(alias)
    rows = setting_rows(pool.settings, sources.__getitem__)
    on_lambda = running_on_lambda()
    fleet, note = fleet_of(
        pool.settings,
        explicit=[row.name for row in rows if row.explicit],
        on_lambda=on_lambda,
        workers_per_environment=workers or conf.workers_per_environment(alias),
        environments=conf.expected_concurrency(alias),
    )
    settings_dict = connections[alias].settings_dict
    target = target_of(settings_dict)
    if not connect:
        return DatabaseReport(alias, target, rows, fleet, note)
    password = settings_dict.get("PASSWORD")
    return check_database(
        pool,
        name=alias,
        target=target,
        settings=rows,
        fleet=fleet,
        fleet_note=note,
        on_lambda=on_lambda,
        conninfo_params={"options": (settings_dict.get("OPTIONS") or {}).get("options")},
        secrets=[password] if isinstance(password, str) and password else [],
    )


def target_of(settings_dict: dict[str, object]) -> str:
    """Host, port, database and user of a ``DATABASES`` entry, as the core shows them."""
    keys = (("host", "HOST"), ("port", "PORT"), ("dbname", "NAME"), ("user", "USER"))
    shown = {key: str(settings_dict[name]) for key, name in keys if settings_dict.get(name)}
    return describe_conninfo(make_conninfo("", **shown))
