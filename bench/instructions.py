"""Client instructions per request, counted by callgrind: the cost tables that repeat.

    python bench/instructions.py [--only core,django,flask,lambda,deadline]
                                 [--strategies held,ours]
                                 [--requests 300] [--back-to-back] [--json]

Time on a shared 2-core machine moves by 5-30% between runs; the number of instructions
the client process executes does not (to about 0.1% here with a fixed hash seed). Each
strategy runs in a process of its own under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0``, against one throwaway PostgreSQL the parent starts. The child sets
up and serves 50 requests with valgrind's instrumentation off (CPython specializes its
bytecode then, as in a warm instance), moves what it made out of the cyclic collector's
way (``gc.freeze()``: one full collection of the heap in one strategy's window and not
another's would decide a comparison), then counts `--requests` more. Between two
requests the child sleeps 5 ms with counting paused, as an instance does between
invocations, so that the answer to the pool's deferred reset has arrived (as it has
when Lambda posts a response and waits for the next event); what the pause itself
costs is measured by a strategy that does nothing and taken off every row. With
``--back-to-back`` there is no pause: each request starts as soon as the last one
ended, as in a loop of requests on one thread, and a borrow may have to wait for the
reset's answer.

Only instructions in user space are counted: a system call counts its libc wrapper,
not the kernel's work, and waiting for the server costs nothing. The timed tables
(``bench/run_all.py``) show what these do not: round trips and system calls.

The marks that start and stop counting are valgrind's client requests, built from
``callgrind_marks.c`` with the machine's C compiler into a temporary directory.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WARMUP = 50
GAP = 0.005
# Set in the child by the parent: "0" for --back-to-back.
_GAP_VARIABLE = "SP_BENCH_COUNT_GAP"

Request = Callable[[], object]

# -- the strategies: each returns the request it serves ----------------------------------


def _nothing(endpoint: Any) -> Request:
    return lambda: None


def _core(name: str) -> Callable[[Any], Request]:
    def make(endpoint: Any) -> Request:
        import bench_core

        conninfo = endpoint.conninfo(application_name="bench")
        if name == "reset_never":
            from serverless_pool import ServerlessPool

            pool = ServerlessPool(conninfo, max_size=1, reset_on_return="never")

            def request() -> object:
                with pool.connection() as conn:
                    return conn.execute("SELECT 1").fetchone()

            return request
        maker = {
            "held": bench_core._held,
            "floor": bench_core._hand_rolled,
            "ours": bench_core._ours,
            "psycopg_pool": lambda c: bench_core._psycopg_pool(c, check=False),
            "psycopg_pool_check": lambda c: bench_core._psycopg_pool(c, check=True),
        }[name]
        return maker(conninfo).request

    return make


def _flask(name: str, driver: str = "wsgi") -> Callable[[Any], Request]:
    """A Flask app served by a plain WSGI call (as a server or apig-wsgi calls it), or
    through Flask's test client (as issue 17 counted it)."""

    def make(endpoint: Any) -> Request:
        import bench_flask

        factory = bench_flask.factory_named(name)
        conninfo = endpoint.conninfo(application_name="bench")
        if driver == "wsgi":
            request, _ = bench_flask._setup(factory, conninfo)()
            return request
        client = factory(conninfo, ExitStack()).test_client()

        def through_test_client() -> object:
            response = client.get("/")
            if response.status_code != 200:
                raise AssertionError(f"the request failed: {response.status}")
            return response

        return through_test_client

    return make


def _django(alias: str) -> Callable[[Any], Request]:
    def make(endpoint: Any) -> Request:
        import bench_django

        bench_django._configure(endpoint)
        bench_django.urlpatterns[:] = bench_django._urls()
        client = bench_django._client(alias)

        def request() -> object:
            if not client.request():
                raise AssertionError(f"the request failed: {client.status}")
            return None

        return request

    return make


def _lambda(kind: str, statement_timeout: bool = False) -> Callable[[Any], Request]:
    """The same app and event through the bare adapter, or through `make_handler`."""

    def make(endpoint: Any) -> Request:
        from awslambdaric.lambda_context import LambdaContext

        event = json.loads((ROOT / "tests/aws_lambda/events/http_api_v2.json").read_text())
        conninfo = endpoint.conninfo(application_name="bench")
        if kind.startswith("wsgi"):
            from flask import Flask
            from flask_serverless_pool import ServerlessPool

            app = Flask("bench")
            app.config["SERVERLESS_POOL_DATABASE_URL"] = conninfo
            db = ServerlessPool(app)

            @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
            @app.route("/<path:path>", methods=["GET", "POST"])
            def index(path: str) -> str:
                with db.connection() as conn:
                    return str(conn.execute("SELECT 1").fetchone())

            if kind == "wsgi_bare":
                from apig_wsgi import make_lambda_handler

                from serverless_pool.aws_lambda.adapters import TEXT_TYPES

                # apig-wsgi as make_handler sets it up: binary responses on.
                handler: Any = make_lambda_handler(
                    app, binary_support=True, non_binary_content_type_prefixes=TEXT_TYPES
                )
            else:
                from serverless_pool.aws_lambda import make_handler

                handler = make_handler(
                    app, register_extension=False, statement_timeout=statement_timeout
                )
        else:
            from serverless_pool import ServerlessPool as CorePool

            pool = CorePool(conninfo, max_size=1)

            async def app(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http":
                    return
                with pool.connection() as conn:
                    row = conn.execute("SELECT 1").fetchone()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": str(row).encode()})

            if kind == "asgi_bare":
                from mangum import Mangum

                handler = Mangum(app, lifespan="off")
            else:
                from serverless_pool.aws_lambda import make_handler

                handler = make_handler(app, lifespan="off", register_extension=False)

        def request() -> object:
            # A fresh context each time, as the runtime makes one: 30 s left.
            context = LambdaContext(
                "request-id", None, None, int(time.time() * 1000) + 30_000, "arn", None
            )
            response = handler(event, context)
            if response["statusCode"] != 200:
                raise AssertionError(f"the invocation failed: {response}")
            return response

        return request

    return make


def _deadline(kind: str, bounded: bool) -> Callable[[Any], Request]:
    """A pooled statement inside a deadline, with statements bounded on the server or
    not (`serverless_pool.statement_deadline`); each in a process of its own, so an
    unbounded row runs the code of a process that never turned the bound on."""

    def make(endpoint: Any) -> Request:
        from contextlib import nullcontext

        from serverless_pool import ServerlessPool, bound_statements_by_deadline, deadline_after

        pool = ServerlessPool(endpoint.conninfo(application_name="bench"), max_size=1)
        bound: Any = bound_statements_by_deadline if bounded else nullcontext

        if kind == "simple":

            def run(conn: Any) -> object:
                return conn.execute("SELECT 1").fetchone()

        elif kind == "extended":

            def run(conn: Any) -> object:
                return conn.execute("SELECT %s::int", (1,)).fetchone()

        else:

            def run(conn: Any) -> object:
                with conn.transaction():
                    return conn.execute("SELECT 1").fetchone()

        def request() -> object:
            with deadline_after(30), bound(), pool.connection() as conn:
                return run(conn)

        return request

    return make


#: suite -> [(key, label, maker)]; the first row of a suite is its baseline.
SUITES: dict[str, list[tuple[str, str, Callable[[Any], Request]]]] = {
    "core": [
        ("held", "held raw psycopg connection", _core("held")),
        ("floor", "floor: a lock, a list and one poll() around it", _core("floor")),
        ("ours", "ServerlessPool (default: reset on every return)", _core("ours")),
        ("reset_never", "ServerlessPool, reset_on_return=never", _core("reset_never")),
        ("psycopg_pool", "psycopg_pool, no check", _core("psycopg_pool")),
        ("psycopg_pool_check", "psycopg_pool, check=check_connection", _core("psycopg_pool_check")),
    ],
    "django": [
        ("persistent", "Django persistent connection (CONN_MAX_AGE=None)", _django("persistent")),
        ("ours", "serverless-pool ENGINE + middleware", _django("ours")),
        ("native", 'Django native pool (OPTIONS["pool"])', _django("native")),
        (
            "ours_never",
            "serverless-pool ENGINE + middleware, reset_on_return=never",
            _django("ours_never"),
        ),
    ],
    "flask": [
        ("held", "held global connection, WSGI call", _flask("held")),
        ("ours", "serverless-pool extension, WSGI call", _flask("ours")),
        ("held_client", "held global connection, test client", _flask("held", "client")),
        ("ours_client", "serverless-pool extension, test client", _flask("ours", "client")),
        (
            "never_client",
            "serverless-pool extension, reset_on_return=never, test client",
            _flask("ours_never", "client"),
        ),
    ],
    "deadline": [
        ("off_simple", "SELECT 1 in a deadline, not bounded", _deadline("simple", False)),
        ("on_simple", "SELECT 1 bounded: SET LOCAL in its message", _deadline("simple", True)),
        ("off_extended", "SELECT %s in a deadline, not bounded", _deadline("extended", False)),
        ("on_extended", "SELECT %s bounded: set_config, one Sync", _deadline("extended", True)),
        ("off_transaction", "a transaction in a deadline, not bounded", _deadline("tx", False)),
        ("on_transaction", "a transaction bounded: its BEGIN", _deadline("tx", True)),
        ("lambda_off", "Flask app, make_handler", _lambda("wsgi_ours")),
        (
            "lambda_on",
            "Flask app, make_handler(statement_timeout=True)",
            _lambda("wsgi_ours", True),
        ),
    ],
    "lambda": [
        ("wsgi_bare", "Flask app, apig-wsgi handler alone", _lambda("wsgi_bare")),
        ("wsgi_ours", "Flask app, make_handler", _lambda("wsgi_ours")),
        ("asgi_bare", "ASGI app, Mangum handler alone", _lambda("asgi_bare")),
        ("asgi_ours", "ASGI app, make_handler", _lambda("asgi_ours")),
    ],
}
#: rows compared with a baseline other than the suite's first
BASELINES = {
    ("lambda", "asgi_ours"): "asgi_bare",
    ("flask", "ours_client"): "held_client",
    ("flask", "never_client"): "held_client",
    ("deadline", "on_simple"): "off_simple",
    ("deadline", "on_extended"): "off_extended",
    ("deadline", "off_extended"): "off_extended",
    ("deadline", "on_transaction"): "off_transaction",
    ("deadline", "off_transaction"): "off_transaction",
    ("deadline", "lambda_on"): "lambda_off",
    ("deadline", "lambda_off"): "lambda_off",
}

# -- counting ----------------------------------------------------------------------------


class _Endpoint:
    """The server's address, in the child (where the server object does not exist)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def conninfo(self, **extra: Any) -> str:
        from serverless_pool.testing.postgres import LoopbackEndpoint

        return LoopbackEndpoint.conninfo(self, **extra)  # type: ignore[arg-type]

    def url(self) -> str:
        from serverless_pool.testing.postgres import LoopbackEndpoint

        return LoopbackEndpoint.url(self)  # type: ignore[arg-type]


def build_marks(directory: Path) -> Path:
    """Compile the callgrind marks into a shared library in `directory`."""
    library = directory / "callgrind_marks.so"
    compiler = os.environ.get("CC", "cc")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(HERE / "callgrind_marks.c")],
        check=True,
    )
    return library


def _child(suite: str, key: str, host: str, port: int, requests: int, marks_path: str) -> None:
    sys.path.insert(0, str(HERE))
    marks = ctypes.CDLL(marks_path)
    maker = next(make for k, _, make in SUITES[suite] if k == key) if key != "nothing" else _nothing
    request = maker(_Endpoint(host, port))
    gap = float(os.environ.get(_GAP_VARIABLE, GAP))
    for _ in range(WARMUP):
        request()
        time.sleep(gap)
    # Objects made by the set-up stay out of the cyclic collector's way: otherwise one
    # full collection of the whole heap, landing in one strategy's window and not in
    # another's, decides a comparison (each strategy still pays for its own garbage).
    gc.collect()
    gc.freeze()
    marks.sp_start()
    marks.sp_zero()
    for _ in range(requests):
        request()
        marks.sp_toggle()  # the pause between requests is not counted
        if gap:
            time.sleep(gap)
        marks.sp_toggle()
    marks.sp_dump(b"requests")
    marks.sp_stop()


def count(
    suite: str,
    key: str,
    endpoint: Any,
    requests: int,
    marks: Path,
    workdir: Path,
    gap: float = GAP,
) -> int:
    """Instructions the child counted over `requests` requests (pauses' marks included),
    `gap` seconds apart."""
    out = workdir / f"{suite}-{key}.callgrind"
    argv = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, str(Path(__file__).resolve()), "--child", suite, key,
        endpoint.host, str(endpoint.port), str(requests), str(marks),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
        _GAP_VARIABLE: repr(gap),
    }
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    dumps = sorted(workdir.glob(f"{out.name}.*"))
    if done.returncode != 0 or not dumps:
        raise RuntimeError(f"counting {suite}/{key} failed:\n{done.stderr[-4000:]}")
    for line in dumps[0].read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[0]}")


def run(
    suites: list[str], requests: int, only: set[str] | None = None, gap: float = GAP
) -> list[dict[str, Any]]:
    """Count every strategy of `suites` (those keyed in `only`, and their baselines); one
    row each, with its ratio to the baseline."""
    from serverless_pool.testing.postgres import PostgresServer

    rows: list[dict[str, Any]] = []
    with (
        PostgresServer() as server,
        tempfile.TemporaryDirectory(prefix="sp-instructions-") as tmp,
        ExitStack(),
    ):
        workdir = Path(tmp)
        marks = build_marks(workdir)
        pause = count("core", "nothing", server, requests, marks, workdir, gap) / requests
        for suite in suites:
            per_request: dict[str, float] = {}
            wanted = {k for k, _, _ in SUITES[suite]} if only is None else set(only)
            wanted |= {BASELINES.get((suite, k), SUITES[suite][0][0]) for k in wanted}
            for key, label, _ in SUITES[suite]:
                if key not in wanted:
                    continue
                total = count(suite, key, server, requests, marks, workdir, gap)
                per_request[key] = total / requests - pause
                base_key = BASELINES.get((suite, key), SUITES[suite][0][0])
                rows.append(
                    {
                        "suite": suite,
                        "key": key,
                        "strategy": label,
                        "instructions": round(per_request[key]),
                        "baseline": base_key,
                        "ratio": per_request[key] / per_request[base_key],
                    }
                )
                print(f"  {suite:<7} {label:<52} {per_request[key]:>10,.0f}", file=sys.stderr)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for suite in dict.fromkeys(row["suite"] for row in rows):
        lines += [
            f"\n{suite}:\n",
            "| strategy | instructions per request | ratio | to |",
            "|---|---:|---:|---|",
        ]
        labels = {row["key"]: row["strategy"] for row in rows if row["suite"] == suite}
        for row in rows:
            if row["suite"] == suite:
                lines.append(
                    f"| {row['strategy']} | {row['instructions'] / 1000:,.1f} k"
                    f" | {row['ratio']:.3f} | {labels[row['baseline']]} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default="core,django,flask,lambda",
        help=f"comma-separated suites, of {','.join(SUITES)}",
    )
    parser.add_argument("--strategies", help="comma-separated keys, e.g. held,ours")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help=f"no pause between requests (default: {GAP * 1000:g} ms, not counted)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        suite, key, host, port, requests, marks = args.child
        _child(suite, key, host, int(port), int(requests), marks)
        return 0
    only = {s.strip() for s in args.strategies.split(",")} if args.strategies else None
    gap = 0.0 if args.back_to_back else GAP
    rows = run([s.strip() for s in args.only.split(",")], args.requests, only, gap)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
