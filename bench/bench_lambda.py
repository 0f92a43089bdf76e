"""Lambda numbers for docs/aws_lambda.md, measured on the local emulator.

    python bench/bench_lambda.py [--rounds N] [--shutdowns N] [--callgrind]

1. Cold starts of both example shops (Flask, Django over WSGI), with and without
   ``connect_on_init``: the init phase, then the first response (``GET /health``, one
   query). The four variants take turns in every round, in a shuffled order, so that a
   busy machine slows them alike. Times are wall-clock on a shared machine: compare the
   rows, not the absolute numbers.
2. Shutdown with make_handler's default (a no-op internal extension): SIGTERM to the
   runtime's exit, and to the session's disappearance from ``pg_stat_activity``.
3. What registering the extension costs: init with and without it (side by side), warm
   invocations with and without it, and (``--callgrind``) the instructions of the
   registration itself, counted by valgrind (deterministic, whatever the load).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serverless_pool.aws_lambda import COMMAND_KEY  # noqa: E402
from serverless_pool.testing.lambda_emulator import (  # noqa: E402
    LambdaInstance,
    RuntimeApi,
    http_api_event,
)
from serverless_pool.testing.postgres import APP_USER, PostgresServer  # noqa: E402

EXAMPLES = ROOT / "example_projects"
FUNCTIONS = ROOT / "tests" / "aws_lambda" / "functions"


def _health() -> dict[str, Any]:
    return http_api_event("GET", "/health", [("Host", "localhost")])


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.1f}"


def _spread_ms(values: list[float]) -> str:
    ordered = sorted(values)
    low, high = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
    return f"{low * 1000:,.1f}–{high * 1000:,.1f}"


def _database(pg: PostgresServer, name: str) -> str:
    pg.execute(f"DROP DATABASE IF EXISTS {name}")
    pg.execute(f"CREATE DATABASE {name} OWNER {APP_USER}")
    return pg.url(dbname=name)


def _schema(handler: str, cwd: Path, env: dict[str, str], argv: list[str]) -> None:
    """Create the schema the way the docs say: a direct invocation of the function."""
    with LambdaInstance(handler, cwd=cwd, env=env, timeout=120) as instance:
        result = instance.invoke({COMMAND_KEY: argv})
        if not result.ok or result.payload.get("exitStatus") != 0:
            raise RuntimeError(f"{argv}: {result.payload}")


def cold_starts(pg: PostgresServer, rounds: int) -> None:
    flask_env = {
        "SERVERLESS_POOL_DATABASE_URL": _database(pg, "bench_flask_shop"),
        "SHOP_MANAGEMENT_COMMANDS": "init-db",
    }
    django_env = {
        "DATABASE_URL": _database(pg, "bench_django_shop"),
        "DJANGO_SETTINGS_MODULE": "shopsite.settings",
        "SHOP_MANAGEMENT_COMMANDS": "migrate",
    }
    _schema("lambda_handler.handler", EXAMPLES / "flask_app", flask_env, ["init-db"])
    _schema("lambda_handler.handler", EXAMPLES / "django_app", django_env, ["migrate", "--noinput"])
    variants = {
        (app, on): (EXAMPLES / f"{app}_app", {**env, "SHOP_CONNECT_ON_INIT": "1" if on else ""})
        for app, env in (("flask", flask_env), ("django", django_env))
        for on in (False, True)
    }
    init: dict[tuple[str, bool], list[float]] = {k: [] for k in variants}
    first: dict[tuple[str, bool], list[float]] = {k: [] for k in variants}
    opened: dict[tuple[str, bool], set[int]] = {k: set() for k in variants}
    order = list(variants)
    for _ in range(rounds):
        random.shuffle(order)
        for key in order:
            cwd, env = variants[key]
            with LambdaInstance("lambda_handler.handler", cwd=cwd, env=env) as instance:
                init[key].append(instance.start())
                result = instance.invoke(_health())
                if not result.ok or result.payload.get("statusCode") != 200:
                    raise RuntimeError(f"{key}: {result.payload}")
                first[key].append(result.seconds)
                opened[key].add(result.connections_opened)
    print(f"\nCold starts, {rounds} rounds (median ms, quartiles in brackets):\n")
    print("| app | connect_on_init | init phase | first response | init + first response |"
          " connections opened by the first request |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for app, on in variants:
        key = (app, on)
        total = [a + b for a, b in zip(init[key], first[key], strict=True)]
        print(
            f"| {app} | {'on' if on else 'off'} | {_median_ms(init[key])} ({_spread_ms(init[key])})"
            f" | {_median_ms(first[key])} ({_spread_ms(first[key])})"
            f" | {_median_ms(total)} | {', '.join(map(str, sorted(opened[key])))} |"
        )


def shutdowns(pg: PostgresServer, count: int) -> None:
    app_name = "bench-shutdown"
    env = {"SERVERLESS_POOL_DATABASE_URL": pg.url(), "SERVERLESS_POOL_APPLICATION_NAME": app_name}
    exit_times: list[float] = []
    gone_times: list[float] = []
    for _ in range(count):
        with LambdaInstance("pool_function.handler", cwd=FUNCTIONS, env=env) as instance:
            result = instance.invoke(_health())
            backend = json.loads(result.payload["body"])["backend"]
            instance.freeze()
            ended = instance.shutdown()
            if not (ended.sigterm and ended.graceful):
                raise RuntimeError(f"shutdown: {ended}")
            while backend in {b.pid for b in pg.backends(application_name=app_name)}:
                time.sleep(0.001)
            gone_times.append(time.monotonic() - ended.started)
            exit_times.append(ended.seconds)
    print(f"\nShutdown with the default extension, {count} shutdowns (ms):\n")
    print("| from SIGTERM to | median | max |\n|---|---:|---:|")
    print(f"| the runtime's exit | {_median_ms(exit_times)} | {max(exit_times) * 1000:.1f} |")
    print(
        f"| the session gone from pg_stat_activity (polled) | {_median_ms(gone_times)}"
        f" | {max(gone_times) * 1000:.1f} |"
    )


def extension_cost(pg: PostgresServer, rounds: int, warm: int) -> None:
    env = {
        "SERVERLESS_POOL_DATABASE_URL": pg.url(),
        "SERVERLESS_POOL_APPLICATION_NAME": "bench-ext",
    }
    init: dict[bool, list[float]] = {True: [], False: []}
    invoke: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for registered in random.sample([True, False], 2):
            variant = {**env, "REGISTER_EXTENSION": "1" if registered else "0"}
            with LambdaInstance("pool_function.handler", cwd=FUNCTIONS, env=variant) as one:
                init[registered].append(one.start())
                one.invoke(_health())
                for _ in range(warm):
                    invoke[registered].append(one.invoke(_health()).seconds)
    print(f"\nThe extension, {rounds} rounds side by side (median ms, quartiles):\n")
    print("| extension | init phase | warm invocation (emulator round trip) |\n|---|---:|---:|")
    for registered in (False, True):
        print(
            f"| {'registered' if registered else 'off'} | {_median_ms(init[registered])}"
            f" ({_spread_ms(init[registered])}) | {_median_ms(invoke[registered])}"
            f" ({_spread_ms(invoke[registered])}) |"
        )


def registration_instructions() -> None:
    """Instructions of register_extension(), as valgrind counts them (the difference
    between a process that imports the module and registers, and one that only imports)."""
    api = RuntimeApi(function_name="bench").start()
    try:
        counts = {}
        load = "import serverless_pool.aws_lambda.extension as e"
        for label, code in (
            ("import only", load),
            ("import + register", f"{load}; e.register_extension()"),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "callgrind.out"
                subprocess.run(
                    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                     sys.executable, "-c", code],
                    env={**os.environ, "PYTHONHASHSEED": "0", "AWS_LAMBDA_RUNTIME_API": api.address,
                         "PYTHONPATH": str(ROOT)},
                    check=True, capture_output=True, timeout=600,
                )  # fmt: skip
                summary = next(
                    line for line in out.read_text().splitlines() if line.startswith("summary:")
                )
                counts[label] = int(summary.split()[1])
        cost = counts["import + register"] - counts["import only"]
        print(
            f"\nregister_extension(): {cost:,} instructions (valgrind, PYTHONHASHSEED=0),"
            f" once per instance, in the init phase"
        )
    finally:
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--shutdowns", type=int, default=20)
    parser.add_argument("--warm", type=int, default=50, help="warm invocations per round")
    parser.add_argument("--callgrind", action="store_true", help="count the registration")
    args = parser.parse_args()
    with PostgresServer() as pg:
        cold_starts(pg, args.rounds)
        shutdowns(pg, args.shutdowns)
        extension_cost(pg, args.rounds, args.warm)
    if args.callgrind:
        registration_instructions()


if __name__ == "__main__":
    main()
