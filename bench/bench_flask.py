"""Flask: one ``SELECT 1`` request through the WSGI stack, five ways, side by side.

    python bench/bench_flask.py [--quick]

Every variant is a real Flask app with one view; each request is a plain WSGI call
(``app(environ, start_response)``, the way a WSGI server or a Lambda adapter calls it).
Each variant runs in a process of its own (see `isolated.py`), and the variants take
turns in batches of requests, in a shuffled order, so that machine noise hits all alike.
Printed: median and p99 latency in µs and the ratio to the app holding one global
psycopg connection (reopened when psycopg sees it closed), paired by round (see
`rounds.py`). Then each variant serves requests while the server ends its backend
before every request (1,000 for ours, 200 for the others), and the failed requests are
counted.

`run(quick)` returns the rows for ``bench/run_all.py``; `format_table(rows)` prints them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

import psycopg
from flask import Flask
from werkzeug.test import EnvironBuilder

from serverless_pool.testing.postgres import PostgresServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from isolated import Setup, measure_in_processes
from placement import pin_client_and_server
from rounds import paired_ratio, ratio_quartiles
from tables import latency_table

HELD = "held global connection"
OURS = "serverless-pool"
Variant = tuple[str, Flask, str]  # label, app, application_name of its sessions


def _flask(name: str) -> Flask:
    app = Flask(name)
    app.logger.disabled = True  # failed requests in the fault phase are counted, not logged
    return app


def connect_per_request(conninfo: str, stack: ExitStack) -> Flask:
    app = _flask("connect_per_request")

    @app.route("/")
    def index() -> str:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT 1").fetchone()
        return str(row)

    return app


def held_connection(conninfo: str, stack: ExitStack) -> Flask:
    """One module-level connection, reopened when psycopg knows it is closed."""
    app = _flask("held_connection")
    held: list[psycopg.Connection[Any]] = []

    def close() -> None:
        for conn in held:
            conn.close()

    stack.callback(close)

    @app.route("/")
    def index() -> str:
        if not held or held[0].closed:
            held[:] = [psycopg.connect(conninfo, autocommit=True)]
        row = held[0].execute("SELECT 1").fetchone()
        return str(row)

    return app


def psycopg_pool(conninfo: str, stack: ExitStack) -> Flask:
    from psycopg_pool import ConnectionPool

    app = _flask("psycopg_pool")
    # It logs every dead connection it finds in the fault phase; those are counted instead.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    pool = ConnectionPool(conninfo, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True)
    stack.callback(pool.close)

    @app.route("/")
    def index() -> str:
        with pool.connection() as conn:
            row = conn.execute("SELECT 1").fetchone()
        return str(row)

    return app


def flask_sqlalchemy(conninfo: str, stack: ExitStack) -> Flask:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import URL, text

    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    app = _flask("flask_sqlalchemy")
    app.config["SQLALCHEMY_DATABASE_URI"] = URL.create(
        "postgresql+psycopg",
        username=str(params["user"]),
        password=str(params["password"]),
        host=str(params["host"]),
        port=int(str(params["port"])),
        database=str(params["dbname"]),
        query={"application_name": str(params["application_name"])},
    )
    db = SQLAlchemy(app)  # the default engine: QueuePool, no pre-ping

    def dispose() -> None:
        with app.app_context():
            db.engine.dispose()

    stack.callback(dispose)

    @app.route("/")
    def index() -> str:
        return str(db.session.execute(text("SELECT 1")).scalar())

    return app


def serverless_pool(conninfo: str, stack: ExitStack, reset_on_return: str | None = None) -> Flask:
    from flask_serverless_pool import ServerlessPool

    app = _flask("serverless_pool")
    app.config["SERVERLESS_POOL_DATABASE_URL"] = conninfo
    if reset_on_return is not None:
        app.config["SERVERLESS_POOL_RESET_ON_RETURN"] = reset_on_return
    db = ServerlessPool(app)
    stack.callback(db.get_pool(app).close)

    @app.route("/")
    def index() -> str:
        with db.connection() as conn:
            row = conn.execute("SELECT 1").fetchone()
        return str(row)

    return app


def factory_named(name: str) -> Callable[[str, ExitStack], Flask]:
    """The app factory the counting benchmarks (instructions.py, syscalls.py) pick by
    name: ``held``, ``ours`` (the default settings) or ``ours_never``."""
    if name == "ours_never":
        return functools.partial(serverless_pool, reset_on_return="never")
    return {"held": held_connection, "ours": serverless_pool}[name]


FACTORIES: tuple[tuple[str, Callable[[str, ExitStack], Flask]], ...] = (
    ("connect per request", connect_per_request),
    (HELD, held_connection),
    ("psycopg_pool (no check)", psycopg_pool),
    ("Flask-SQLAlchemy default engine", flask_sqlalchemy),
    (OURS, serverless_pool),
)


class _Client:
    """Calls a WSGI app the way a server does, and says whether the request succeeded."""

    def __init__(self) -> None:
        self.environ = EnvironBuilder(path="/", method="GET").get_environ()
        self.status = ""

    def _start_response(
        self, status: str, headers: Any, exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        return self._write

    def _write(self, data: bytes) -> None:
        raise AssertionError("the apps return their body, they never write() it")

    def request(self, app: Flask) -> bool:
        body: Iterable[bytes] = app(dict(self.environ), self._start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return self.status.startswith("200")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _setup(factory: Callable[[str, ExitStack], Flask], conninfo: str) -> Setup:
    """The variant's process: its own app, warmed up like an instance that serves."""

    def setup() -> tuple[Callable[[], object], Callable[[], object]]:
        stack = ExitStack()
        app = factory(conninfo, stack)
        client = _Client()

        def request() -> None:
            if not client.request(app):
                raise AssertionError(f"the request failed: {client.status}")

        return request, stack.close

    return setup


def _failures(
    server: PostgresServer, variants: list[Variant], ours: int, others: int
) -> dict[str, tuple[int, int]]:
    """Failed and total requests per variant, the server ending its sessions before each."""
    client = _Client()
    counts: dict[str, tuple[int, int]] = {}
    with psycopg.connect(server.superuser_conninfo, autocommit=True) as superuser:
        for label, app, application_name in variants:
            requests = ours if label == OURS else others
            failed = done = 0
            stop_at = time.monotonic() + 120
            while done < requests and time.monotonic() < stop_at:
                server.terminate_backends(application_name=application_name, admin=superuser)
                try:
                    ok = client.request(app)
                except Exception:
                    ok = False
                failed += not ok
                done += 1
            counts[label] = (failed, done)
    return counts


def run(quick: bool = False) -> list[dict[str, object]]:
    """Measure every variant side by side; one row each (the held connection is 1.0)."""
    rounds, batch = (40, 25) if quick else (200, 50)
    ours_faults, other_faults = (200, 50) if quick else (1000, 200)
    with PostgresServer() as server, ExitStack() as stack:
        placement = pin_client_and_server(server, stack)
        conninfos = {
            label: server.conninfo(application_name=f"bench-flask-{i}")
            for i, (label, _) in enumerate(FACTORIES)
        }
        timings = measure_in_processes(
            {label: _setup(factory, conninfos[label]) for label, factory in FACTORIES},
            rounds=rounds,
            batch=lambda label: 3 if label == "connect per request" else batch,
            warmup=50,
        )
        variants: list[Variant] = [
            (label, factory(conninfos[label], stack), f"bench-flask-{i}")
            for i, (label, factory) in enumerate(FACTORIES)
        ]
        faults = _failures(server, variants, ours_faults, other_faults)
    samples = {label: timings[label].samples for label, _ in FACTORIES}
    round_medians = {label: timings[label].round_medians for label, _ in FACTORIES}
    held = round_medians[HELD]
    rows: list[dict[str, object]] = []
    for label, _, _ in variants:
        median = statistics.median(samples[label])
        failed, done = faults[label]
        q1, q3 = ratio_quartiles(round_medians[label], held)
        rows.append(
            {
                "strategy": label,
                "median_us": round(median, 1),
                "p99_us": round(_percentile(samples[label], 0.99), 1),
                "ratio": round(paired_ratio(round_medians[label], held), 3),
                "ratio_q1": round(q1, 3),
                "ratio_q3": round(q3, 3),
                "samples": len(samples[label]),
                "failed": failed,
                "fault_requests": done,
                "cpus": placement,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The README's Markdown table."""
    return latency_table(rows, "Flask request (WSGI, SELECT 1)", "held connection")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    print(format_table(rows))
    print(f"placement: {rows[0]['cpus']}")
    ours = next(r for r in rows if r["strategy"] == OURS)
    target = float(str(ours["ratio"])) <= 1.05 and ours["failed"] == 0
    print(f"target (≤ 1.05× held, 0 failures): {'met' if target else 'NOT met'}")
    return 0 if target else 1


if __name__ == "__main__":
    sys.exit(main())
