"""What the guaranteed session reset costs: ``reset_on_return`` always (the default) vs never.

    python bench/bench_reset.py [--quick]

Every connection that comes back gets ``DISCARD ALL``, sent at once and its answer read at
the next borrow, so no request waits for it when something else happens in between. Four
paths, each measured with both modes side by side in one run, in rounds of short batches
in a shuffled order, the ratio paired by round (see `rounds.py`):

- the core, back to back: borrow, ``SELECT 1``, return, and the next borrow at once. A loop
  with no pause has nothing to overlap the reset with: the next borrow's statement goes
  behind the reset in one pipeline (one round trip for both), but the server still runs
  ``DISCARD ALL`` before it. This is the worst case, reported as it is.
- a Flask request (a plain WSGI call, as a server makes it) and a Django request (Django's
  WSGI handler with the ENGINE and middleware): the framework's own work around the
  request overlaps the reset.
- a Lambda invocation: ``make_handler`` on a WSGI function, through the local emulator and
  the real ``awslambdaric``, frozen between invocations as Lambda does: the runtime posts
  the response and waits for the next event while the reset travels.

Each core, Flask and Django mode runs in a process of its own (see `isolated.py`); the two
Lambda environments are separate processes by nature. Instruction counts of the same
comparison, which do not move with the machine's load: ``bench/instructions.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from isolated import Setup, measure_in_processes  # noqa: E402
from placement import pin_client_and_server  # noqa: E402
from rounds import paired_ratio, ratio_quartiles  # noqa: E402

from serverless_pool.testing.postgres import PostgresServer  # noqa: E402

MODES = ("always", "never")


def _core(conninfo: str, mode: str) -> Setup:
    def setup() -> tuple[Callable[[], object], Callable[[], object]]:
        from serverless_pool import ServerlessPool

        pool = ServerlessPool(conninfo, max_size=1, reset_on_return=mode)

        def request() -> object:
            with pool.connection() as conn:
                return conn.execute("SELECT 1").fetchone()

        return request, pool.close

    return setup


def _flask(conninfo: str, mode: str) -> Setup:
    def setup() -> tuple[Callable[[], object], Callable[[], object]]:
        import bench_flask
        from flask_serverless_pool import ServerlessPool

        stack = ExitStack()
        app = bench_flask._flask(f"reset_{mode}")
        app.config["SERVERLESS_POOL_DATABASE_URL"] = conninfo
        app.config["SERVERLESS_POOL_RESET_ON_RETURN"] = mode
        db = ServerlessPool(app)
        stack.callback(db.get_pool(app).close)

        @app.route("/")
        def index() -> str:
            with db.connection() as conn:
                return str(conn.execute("SELECT 1").fetchone())

        client = bench_flask._Client()

        def request() -> None:
            if not client.request(app):
                raise AssertionError(f"the request failed: {client.status}")

        return request, stack.close

    return setup


def _lambda_rounds(server: PostgresServer, rounds: int, batch: int) -> dict[str, list[float]]:
    """Per-round medians (µs) of warm invocations through the emulator, by mode."""
    from serverless_pool.testing.lambda_emulator import LambdaInstance, http_api_event

    functions = ROOT / "tests" / "aws_lambda" / "functions"
    event = http_api_event("GET", "/", [("Host", "localhost")])
    medians: dict[str, list[float]] = {mode: [] for mode in MODES}
    with ExitStack() as stack:
        instances = {}
        for mode in MODES:
            env = {
                "SERVERLESS_POOL_DATABASE_URL": server.url(),
                "SERVERLESS_POOL_APPLICATION_NAME": f"bench-reset-{mode}",
                "SERVERLESS_POOL_RESET_ON_RETURN": mode,
            }
            instance = stack.enter_context(
                LambdaInstance(
                    "pool_function.handler", cwd=functions, env=env, count_connections=False
                )
            )
            instance.start()
            for _ in range(20):  # warm: connected, code paths specialized
                instance.invoke(event)
            instances[mode] = instance
        order = list(MODES)
        shuffle = random.Random(7).shuffle
        for _ in range(rounds):
            shuffle(order)
            for mode in order:
                times = [instances[mode].invoke(event).seconds * 1e6 for _ in range(batch)]
                medians[mode].append(statistics.median(times))
    return medians


def run(quick: bool = False) -> list[dict[str, Any]]:
    rounds, batch = (30, 20) if quick else (150, 50)
    rows: list[dict[str, Any]] = []
    with PostgresServer() as server, ExitStack() as stack:
        pin_client_and_server(server, stack)

        def add(
            path: str, medians: dict[str, list[float]], samples: dict[str, list[float]]
        ) -> None:
            q1, q3 = ratio_quartiles(medians["always"], medians["never"])
            rows.append(
                {
                    "path": path,
                    "never_us": statistics.median(samples["never"]),
                    "always_us": statistics.median(samples["always"]),
                    "ratio": paired_ratio(medians["always"], medians["never"]),
                    "ratio_q1": q1,
                    "ratio_q3": q3,
                }
            )

        for path, maker in (
            ("core, back to back (borrow + SELECT 1 + return)", _core),
            ("Flask request (WSGI call, SELECT 1)", _flask),
        ):
            timings = measure_in_processes(
                {mode: maker(server.conninfo(application_name=f"bench-{mode}"), mode)
                 for mode in MODES},
                rounds=rounds, batch=lambda _: batch, warmup=50,
            )  # fmt: skip
            add(
                path,
                {mode: timings[mode].round_medians for mode in MODES},
                {mode: timings[mode].samples for mode in MODES},
            )

        import bench_django

        bench_django._configure(server)
        bench_django.urlpatterns[:] = bench_django._urls()
        timings = measure_in_processes(
            {"always": bench_django._setup("ours"), "never": bench_django._setup("ours_never")},
            rounds=rounds, batch=lambda _: batch, warmup=50,
        )  # fmt: skip
        add(
            "Django request (WSGI handler, ENGINE + middleware, SELECT 1)",
            {mode: timings[mode].round_medians for mode in MODES},
            {mode: timings[mode].samples for mode in MODES},
        )

        lambda_rounds, lambda_batch = (10, 10) if quick else (40, 20)
        medians = _lambda_rounds(server, lambda_rounds, lambda_batch)
        add("Lambda invocation (make_handler, emulator, awslambdaric)", medians, medians)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | never, median µs | always (default), median µs | always ÷ never"
        " | quartiles of rounds |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['path']} | {row['never_us']:,.0f} | {row['always_us']:,.0f}"
            f" | {row['ratio']:.3f} | {row['ratio_q1']:.2f}–{row['ratio_q3']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args(argv)
    print(format_table(run(args.quick)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
