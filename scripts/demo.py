"""The serverless-pool demo: what goes wrong on Lambda, and the pool not minding it.

Starts a throwaway PostgreSQL on 127.0.0.1 (removed at the end) and plays the events a
Lambda instance lives through, first with a plain held psycopg connection, then with a
`ServerlessPool`:

1. a request, then the server ends the session while the instance is idle (an
   ``idle_session_timeout``, a failover, an operator);
2. the next request;
3. the server restarts;
4. the next request;
5. a request that fails half way through a transaction.

Then, when the Lambda emulator is available, the Flask example app runs "on Lambda"
locally: the instance is frozen, its backend ended while frozen, thawed, and answers.

Last, a short fleet (``serverless-pool fleet --quick --shape burst``, about 20 s): 9
instances of the real Lambda runtime for 3 database slots, each way of connecting on
the same traffic. The full simulation (three shapes, about a minute) is
``serverless-pool fleet``.

    ./scripts/demo            (installs what it needs, then runs this)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer

BOLD, GREEN, RED, DIM, RESET = "\033[1m", "\033[32m", "\033[31m", "\033[2m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = GREEN = RED = DIM = RESET = ""


def say(text: str) -> None:
    print(text, flush=True)


def outcome(label: str, action: Callable[[], Any]) -> bool:
    started = time.perf_counter()
    try:
        result = action()
    except psycopg.Error as err:
        first_line = str(err).strip().splitlines()[0]
        say(f"  {label:<44} {RED}FAILED{RESET}  {type(err).__name__}: {first_line}")
        return False
    took = (time.perf_counter() - started) * 1e6
    say(f"  {label:<44} {GREEN}ok{RESET}      {result}  {DIM}({took:,.0f} µs){RESET}")
    return True


def play(
    pg: PostgresServer, name: str, request: Callable[[], Any], pids: Callable[[], list[int]]
) -> int:
    say(f"\n{BOLD}{name}{RESET}")
    failures = 0
    failures += not outcome("1. request", request)
    pg.terminate_backends(pids=pids())
    say(f"  {DIM}-- the server ends the idle session (idle_session_timeout, failover...){RESET}")
    failures += not outcome("2. next request", request)
    failures += not outcome("   and the one after", request)
    pg.restart()
    say(f"  {DIM}-- the server restarts{RESET}")
    failures += not outcome("3. next request", request)
    failures += not outcome("   and the one after", request)
    return failures


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    say(f"{BOLD}serverless-pool demo{RESET}: starting a throwaway PostgreSQL on 127.0.0.1 ...")
    with PostgresServer() as pg:
        say(f"  PostgreSQL listening on 127.0.0.1:{pg.port} (a temporary directory)")

        held = psycopg.connect(pg.conninfo(), autocommit=True)
        held_holder = {"conn": held}

        def held_request() -> Any:
            row = held_holder["conn"].execute("SELECT 'hello from ' || pg_backend_pid()").fetchone()
            return row[0] if row else None

        failed_plain = play(
            pg, "A plain psycopg connection held by the instance", held_request,
            lambda: [held_holder["conn"].info.backend_pid],
        )  # fmt: skip
        with contextlib.suppress(Exception):
            held.close()

        pool = ServerlessPool(pg.conninfo(), max_size=1, application_name="demo")

        def pooled_request() -> Any:
            with pool.connection() as conn:
                row = conn.execute("SELECT 'hello from ' || pg_backend_pid()").fetchone()
                return row[0] if row else None

        def pool_pids() -> list[int]:
            return [b.pid for b in pg.backends(application_name="demo")]

        failed_pool = play(pg, "ServerlessPool", pooled_request, pool_pids)

        say(f"\n{BOLD}A request that fails half way through a transaction{RESET}")

        def failing_request() -> None:
            with pool.connection() as conn, conn.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS demo_orders (id int)")
                conn.execute("INSERT INTO demo_orders VALUES (1)")
                raise RuntimeError("the view crashed")

        with contextlib.suppress(RuntimeError):
            failing_request()
        states = [b.state for b in pg.backends(application_name="demo")]
        say(f"  the pool's session on the server afterwards: {states} (not 'idle in transaction')")

        stats = pool.stats()
        say(
            f"\n{BOLD}Pool stats{RESET}: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
        )
        pool.close()

        lambda_failures = _lambda_part(pg)

    fleet = _fleet_part()
    say(
        f"\n{BOLD}Summary{RESET}: held connection failed {failed_plain} of 5 requests;"
        f" ServerlessPool failed {failed_pool} of 5"
        + f"; the shop on the Lambda emulator failed {lambda_failures} of 4"
        + f"; in the fleet, {fleet}."
    )
    fleet_ok = "ServerlessPool failed 0 of" in fleet and "behind PgBouncer 0 of" in fleet
    return 0 if failed_pool == 0 and not lambda_failures and fleet_ok else 1


def _fleet_part() -> str:
    """A short fleet on the Lambda emulator; returns its one-line summary."""
    from serverless_pool.fleet import FleetParams, format_tables, simulate
    from serverless_pool.fleet.progress import ProgressBar

    params = FleetParams.quick().replace(shapes=("burst",))
    shape = params.shape("burst")
    say(
        f"\n{BOLD}A fleet on the Lambda emulator: {shape.instances} instances of the real"
        f" runtime for {params.budget} database slots{RESET}"
    )
    say(
        f"  {DIM}the short shape (serverless-pool fleet --quick --shape burst); every"
        f" instance frozen between requests, the server's idle_session_timeout"
        f" {params.idle_timeout:g} s; the full run, three shapes in about a minute:"
        f" serverless-pool fleet --plot fleet.png{RESET}"
    )
    bar = ProgressBar(sys.stderr)
    try:
        report = simulate(params, progress=bar)
    finally:
        bar.close()
    data = report.as_dict()
    say(format_tables(data["shapes"], report.budget).rstrip())
    runs = {run.strategy: run for run in report.runs()}
    requests = len(runs["serverless-pool"].requests)

    def failed(name: str) -> int:
        return runs[name].errors

    return (
        f"connect per request failed {failed('connect-per-request')} of {requests},"
        f" a module-level connection {failed('module-level')},"
        f" ServerlessPool failed {failed('serverless-pool')} of {requests}"
        f" ({failed('serverless-pool-no-extension')} without its extension),"
        f" behind PgBouncer {failed('serverless-pool-pgbouncer')} of {requests}"
    )


def _lambda_part(pg: PostgresServer) -> int:
    """The Flask example on the local Lambda emulator, answering curl."""
    import json
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from serverless_pool.testing.lambda_emulator import EmulatedFunction, HttpFront

    say(f'\n{BOLD}The Flask example shop "on Lambda" (local emulator, real awslambdaric){RESET}')
    app_dir = Path(__file__).resolve().parents[1] / "example_projects" / "flask_app"
    pg.execute("CREATE DATABASE demo_shop OWNER app")
    url = pg.url(dbname="demo_shop")
    env = {"SERVERLESS_POOL_DATABASE_URL": url, "SERVERLESS_POOL_APPLICATION_NAME": "demo-lambda"}
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "flask_shop", "init-db"],
        cwd=app_dir, env={**os.environ, **env}, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    failures = 0
    curl = shutil.which("curl")
    with (
        EmulatedFunction("lambda_handler.handler", cwd=app_dir, env=env) as function,
        HttpFront(function) as front,
    ):

        def request(method: str, path: str, body: dict[str, Any] | None = None) -> bool:
            shown = f"curl -X {method} {front.url}{path}"
            argv = [curl or "curl", "-sS", "-X", method, "-w", "\n%{http_code}", front.url + path]
            if body is not None:
                shown += f" -d '{json.dumps(body)}'"
                argv += ["-H", "content-type: application/json", "-d", json.dumps(body)]
            if curl:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                text, _, status = done.stdout.rpartition("\n")
            else:  # no curl on this machine: the same request from Python
                import urllib.request

                data = None if body is None else json.dumps(body).encode()
                req = urllib.request.Request(front.url + path, data=data, method=method)  # noqa: S310
                req.add_header("content-type", "application/json")
                with urllib.request.urlopen(req, timeout=60) as answer:  # noqa: S310
                    text, status = answer.read().decode(), str(answer.status)
            ok = status.startswith("2")
            colour = GREEN if ok else RED
            say(f"  $ {shown}\n    {colour}{status}{RESET} {text.strip()[:110]}")
            return ok

        say(f"  {DIM}the front turns HTTP into API Gateway HTTP API v2 events: {front.url}{RESET}")
        failures += not request(
            "POST", "/products", {"name": "lamp", "price_cents": 1999, "stock": 5}
        )
        failures += not request("POST", "/orders", {"product": 1, "quantity": 2})
        say(f"  {DIM}-- the instance is frozen (SIGSTOP) between invocations, as on Lambda;{RESET}")
        say(f"  {DIM}   while it is frozen, the server ends its session{RESET}")
        ended = pg.terminate_backends(application_name="demo-lambda")
        say(f"  {DIM}   (sessions ended: {ended}){RESET}")
        failures += ended != 1
        failures += not request("GET", "/products/1")
        failures += not request("GET", "/orders")
    return failures


if __name__ == "__main__":
    sys.exit(main())
