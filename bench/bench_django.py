"""One ``SELECT 1`` request through Django's full WSGI stack, for each connection strategy.

Strategies: ``CONN_MAX_AGE=0`` (Django's default), a persistent connection, a
persistent connection with ``CONN_HEALTH_CHECKS``, Django's native pool
(``OPTIONS["pool"]``, psycopg_pool) and ours (ENGINE + middleware). Each is a database
alias of one Django project; each request goes through a ``WSGIHandler`` (request
signals, URL resolving, the view, the response, ``close()``), exactly as a WSGI server
drives it. Ours runs with its middleware, the others without it.

Strategies are measured side by side in one run against one throwaway server, each in
a process of its own (see `isolated.py`), in interleaved rounds (shuffled order).
Printed: median and p99 per request in µs, the ratio to the persistent connection (the
median over rounds of each round's median ratio), and how many requests fail when the
server ends the backend between requests.

    python bench/bench_django.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any
from wsgiref.util import setup_testing_defaults

import django
from django.conf import settings

from serverless_pool.testing.postgres import APP_DATABASE, APP_PASSWORD, APP_USER, PostgresServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from isolated import Setup, measure_in_processes
from placement import pin_client_and_server
from rounds import paired_ratio, ratio_quartiles
from tables import latency_table

ENGINE = "django.db.backends.postgresql"
OURS = "django_serverless_pool.backends.postgresql"

#: (alias, label, DATABASES entry changes)
STRATEGIES: list[tuple[str, str, dict[str, Any]]] = [
    ("per_request", "Django CONN_MAX_AGE=0 (default)", {"CONN_MAX_AGE": 0}),
    ("persistent", "Django persistent (CONN_MAX_AGE=None)", {"CONN_MAX_AGE": None}),
    (
        "health",
        "Django persistent + CONN_HEALTH_CHECKS",
        {"CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": True},
    ),
    (
        "native",
        'Django native pool (OPTIONS["pool"])',
        {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"min_size": 1, "max_size": 2}}},
    ),
    ("ours", "serverless-pool ENGINE + middleware", {"ENGINE": OURS}),
    (
        "ours_never",
        "serverless-pool ENGINE + middleware, reset_on_return=never",
        {"ENGINE": OURS, "SERVERLESS_POOL": {"reset_on_return": "never"}},
    ),
]


def _configure(server: PostgresServer) -> None:
    databases: dict[str, dict[str, Any]] = {}
    for alias, _, changes in STRATEGIES:
        entry: dict[str, Any] = {
            "ENGINE": ENGINE,
            "NAME": APP_DATABASE,
            "USER": APP_USER,
            "PASSWORD": APP_PASSWORD,
            "HOST": server.host,
            "PORT": str(server.port),
            **changes,
        }
        options = dict(entry.get("OPTIONS", {}))
        if entry["ENGINE"] == OURS:
            entry["SERVERLESS_POOL"] = {
                **entry.get("SERVERLESS_POOL", {}),
                "application_name": f"bench-{alias}",
            }
        else:
            options["application_name"] = f"bench-{alias}"
        entry["OPTIONS"] = options
        databases[alias] = entry
    databases["default"] = databases["persistent"]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["django_serverless_pool"],
        MIDDLEWARE=[],
        ROOT_URLCONF=__name__,
        DATABASES=databases,
        LOGGING_CONFIG=None,
    )
    django.setup()
    # Failed requests are counted, not printed.
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    logging.getLogger("serverless_pool").setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def select_one(request: Any, alias: str) -> Any:
    from django.db import connections
    from django.http import HttpResponse

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse(b"1")


def _urls() -> list[Any]:
    from django.urls import path

    return [path("<str:alias>", select_one)]


urlpatterns: list[Any] = []


def _handler(middleware: list[str]) -> Any:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


def _environ(alias: str) -> dict[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": f"/{alias}"}
    setup_testing_defaults(environ)  # the standard library's minimal WSGI environ
    return environ


class _Client:
    """Serves one strategy's requests like a WSGI server: call, read the body, close."""

    def __init__(self, alias: str, handler: Any) -> None:
        self.alias, self.handler = alias, handler
        self.environ = _environ(alias)
        self.status = ""

    def _start_response(self, status: str, headers: Iterable[Any], exc_info: Any = None) -> None:
        self.status = status

    def request(self) -> bool:
        environ = dict(self.environ)
        body = self.handler(environ, self._start_response)
        try:
            b"".join(body)
        finally:
            body.close()
        return self.status.startswith("200")


def _client(alias: str) -> _Client:
    middleware = ["django_serverless_pool.middleware.ServerlessPoolMiddleware"]
    return _Client(alias, _handler(middleware if alias.startswith("ours") else []))


def _close_connections() -> None:
    from django.db import connections
    from django_serverless_pool.backends.postgresql.pools import close_pools

    connections.close_all()
    connections["native"].close_pool()
    close_pools()


def _setup(alias: str) -> Setup:
    """The strategy's process: its own client, so only its connection classes run there."""

    def setup() -> tuple[Callable[[], object], Callable[[], object]]:
        return _client(alias).request, _close_connections

    return setup


def _failures(
    server: PostgresServer, client: _Client, count: int, budget_s: float
) -> tuple[int, int]:
    """Requests that fail when the server ends the backend before each of them."""
    client.request()  # a connection exists to be ended
    failed = done = 0
    stop = time.monotonic() + budget_s
    while done < count and time.monotonic() < stop:
        server.terminate_backends(application_name=f"bench-{client.alias}")
        failed += not client.request()
        done += 1
    return failed, done


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure every strategy; one row each (persistent is the reference, ratio 1.0)."""
    with PostgresServer() as server, ExitStack() as stack:
        pin_client_and_server(server, stack)
        _configure(server)
        global urlpatterns
        urlpatterns = _urls()
        timings = measure_in_processes(
            {alias: _setup(alias) for alias, _, _ in STRATEGIES},
            rounds=40 if quick else 200,
            batch=lambda alias: 5 if alias == "per_request" else (25 if quick else 50),
        )
        reference = timings["persistent"].round_medians
        rows = []
        for alias, label, _ in STRATEGIES:
            faults = (200 if quick else 1000) if alias == "ours" else (50 if quick else 200)
            failed, done = _failures(server, _client(alias), faults, budget_s=60.0)
            samples = sorted(timings[alias].samples)
            round_medians = timings[alias].round_medians
            quartiles = ratio_quartiles(round_medians, reference)
            rows.append(
                {
                    "strategy": label,
                    "median_us": statistics.median(samples),
                    "p99_us": samples[max(0, int(len(samples) * 0.99) - 1)],
                    "ratio": paired_ratio(round_medians, reference),
                    "ratio_q1": quartiles[0],
                    "ratio_q3": quartiles[1],
                    "samples": len(samples),
                    "failed": failed,
                    "fault_requests": done,
                }
            )
        _close_connections()
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The README's Markdown table."""
    return latency_table(rows, "Django request (WSGI, SELECT 1)", "persistent")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick)))


if __name__ == "__main__":
    main()
