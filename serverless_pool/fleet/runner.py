"""Run the fleet: the servers, then each shape's strategies, one after the other.

Every instance is an execution environment of the Lambda emulator
(`serverless_pool.testing.lambda_emulator`): the real ``awslambdaric`` running
`serverless_pool.fleet.function` through `make_handler`. On-demand environments are
started by the traffic itself (a cold start, by default a SnapStart restore from a
snapshot of the init phase taken before the run, as Lambda takes it when a version is
published), frozen with SIGSTOP after every invocation, and shut down at the end of the
run as Lambda does: SIGTERM only when the function registered an extension, otherwise
stopped for good, its sessions left to the server's idle timeout. Managed Instances
environments run several workers each and are never frozen.

One run, per strategy: ``waves`` waves of traffic, each from one user per request the
fleet can serve at once; each user arrives within ``spread`` seconds (the same seeded
times for every strategy) and sends ``burst`` requests, ``think`` seconds apart. Once
every user of a wave has its answers, the fleet stays frozen for ``pause`` seconds,
then the next wave comes. After the last wave, every environment is shut down at
once. A `ServerMonitor` samples the server's view all along.

The throwaway server (unless a URL is given) has exactly ``budget`` slots for the
fleet (plus one for the monitor; PostgreSQL gives its superuser reserve out only when
the ordinary slots are gone) and ``idle_session_timeout`` set server-wide, so that it
applies to every strategy that connects directly. PgBouncer, started for its strategy,
exempts its own server sessions (``connect_query``): they are its pool, not clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Final

import psycopg
from psycopg.conninfo import make_conninfo

from ..budget import read_budget
from ..testing.lambda_emulator import EmulatedFunction, LambdaInstance, http_api_event
from .monitor import ServerMonitor
from .params import FleetParams, Shape
from .report import Request, RunResult, ShapeResult, Spread, Timeline
from .strategies import StrategySpec, spec

__all__ = ["HANDLER", "FleetReport", "ProgressCallback", "arrivals", "simulate"]

#: The function every instance runs (module.function, as Lambda's handler setting).
HANDLER: Final = "serverless_pool.fleet.function.handler"

#: Called with (what runs now, requests answered so far, requests planned in all).
ProgressCallback = Callable[[str, int, int], None]

_RESERVED, _MONITOR_SLOT = 3, 1
_MAX_USERS: Final = 120
#: A request whose function did not answer at all (the runtime's status, not the app's).
_FUNCTION_FAILURES: Final = ("function error", "function timeout", "function crash")
#: How PostgreSQL logs a session its idle_session_timeout ended (default log_line_prefix).
_IDLE_TIMEOUT_LINE: Final = re.compile(
    r"\[(\d+)\] FATAL:  terminating connection due to idle-session timeout"
)


@dataclass
class FleetReport:
    """Every shape's runs, on one server, one after the other."""

    params: FleetParams
    server: str
    budget: int
    idle_timeout: float | None
    shapes: list[ShapeResult]
    machine: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    def runs(self) -> list[RunResult]:
        return [run for shape in self.shapes for run in shape.runs]

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.params.as_dict(),
            "server": self.server,
            "budget": self.budget,
            "server_idle_session_timeout_s": self.idle_timeout,
            "machine": self.machine,
            "skipped": list(self.skipped),
            "shapes": [shape.as_dict() for shape in self.shapes],
        }


@dataclass(frozen=True)
class _Target:
    conninfo: str
    monitor: str
    description: str
    server: Any = None  # the throwaway PostgresServer (PgBouncer needs it)

    def log_length(self) -> int:
        return 0 if self.server is None else len(list(self.server.iter_log()))

    def idle_timeouts(self, since: int) -> set[int] | None:
        """Sessions the server's log says its idle_session_timeout ended (None: no log)."""
        if self.server is None:
            return None
        lines = list(self.server.iter_log())[since:]
        return {int(m.group(1)) for line in lines if (m := _IDLE_TIMEOUT_LINE.search(line))}


def arrivals(params: FleetParams, shape: str, wave: int, users: int) -> list[float]:
    """Seconds after the start of `wave` at which each user arrives (seeded)."""
    rng = random.Random(f"{params.seed}/{shape}/{wave}")
    return [rng.uniform(0, params.spread) for _ in range(users)]


def simulate(
    params: FleetParams | None = None,
    *,
    url: str | None = None,
    progress: ProgressCallback | None = None,
) -> FleetReport:
    """Run every shape's strategies against the same server.

    Without `url`, a throwaway PostgreSQL server is started and removed afterwards.
    With a `url`, the budget is the slots free on that server (less the one the monitor
    takes), its own ``idle_session_timeout`` applies, and the PgBouncer strategy, which
    needs the throwaway server, is skipped.
    """
    params = (params or FleetParams()).validate()
    if url is not None and params.strategies and all(spec(s).proxy for s in params.strategies):
        raise ValueError(
            "the PgBouncer strategy starts its own PgBouncer in front of the throwaway"
            " server; it cannot run with --url"
        )
    load_before, cpu_before = _load(), _cpu()
    with _server(params, url) as target:
        skipped: list[str] = []
        if url is not None:
            with psycopg.connect(target.monitor, autocommit=True) as conn:
                free = read_budget(conn).free
            if free < 1:
                raise ValueError("the server given by --url has no free connection slot")
            params = params.replace(budget=free)
        shapes = params.all_shapes()
        if url is not None:
            skipped = [f"{s.name}: {x}" for s in shapes for x in s.strategies if spec(x).proxy]
            shapes = [
                replace(s, strategies=tuple(x for x in s.strategies if not spec(x).proxy))
                for s in shapes
            ]
        for shape in shapes:
            _check_size(shape, url)
        if any(spec(x).proxy for shape in shapes for x in shape.strategies):
            from ..testing.pgbouncer import find_pgbouncer

            find_pgbouncer()  # before any run: a missing binary is said at once
        planned = sum(s.users * params.burst * params.waves * len(s.strategies) for s in shapes)
        counter = _Counter(progress, planned)
        results = []
        for shape in shapes:
            runs = []
            for name in shape.strategies:
                counter.label = f"{shape.name}: {name}"
                counter.tick(0)
                runs.append(_run(shape, spec(name), params, target, counter))
            results.append(ShapeResult(shape.as_dict(), runs))
    cpu_after = _cpu()
    machine = {
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load(),
        # This process (the emulator, the users, the monitor), and its children (the
        # instances, PgBouncer); PostgreSQL's own processes are not counted.
        "cpu_seconds": {
            "driver": round(cpu_after[0] - cpu_before[0], 1),
            "instances": round(cpu_after[1] - cpu_before[1], 1),
        },
    }
    idle = params.idle_timeout if url is None else None
    return FleetReport(params, target.description, params.budget, idle, results, machine, skipped)


def _check_size(shape: Shape, url: str | None) -> None:
    if shape.users <= _MAX_USERS:
        return
    if shape.managed:
        hint = "leave the shape out (--shape)" if url else "give a smaller --budget"
    else:
        hint = "give a smaller --instances" if url else "give a smaller --budget or --instances"
    raise ValueError(
        f"the {shape.name} shape would run {shape.users} instances at once, more than"
        f" {_MAX_USERS} on one machine: {hint}"
    )


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class _Counter:
    """Counts answered requests for the progress callback (from many threads)."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self._total = total
        self._done = 0
        self._lock = threading.Lock()
        self.label = ""

    def tick(self, n: int = 1) -> None:
        if self._callback is None:
            return
        with self._lock:
            self._done += n
            done = self._done
        self._callback(self.label, done, self._total)


@contextlib.contextmanager
def _server(params: FleetParams, url: str | None) -> Iterator[_Target]:
    if url is not None:
        yield _Target(url, url, "given by --url")
        return
    from ..testing.postgres import PostgresServer

    idle_ms = str(round(params.idle_timeout * 1000))  # milliseconds, its unit
    with PostgresServer(
        max_connections=params.budget + _RESERVED + _MONITOR_SLOT,
        settings={"idle_session_timeout": idle_ms},
    ) as server:
        version = server.execute("SHOW server_version")[0][0]
        with psycopg.connect(server.superuser_conninfo, autocommit=True) as conn:
            usable = read_budget(conn).usable
        if usable != params.budget + _MONITOR_SLOT:
            raise RuntimeError(f"the server has {usable} usable slots, not {params.budget + 1}")
        yield _Target(
            server.conninfo(),
            server.superuser_conninfo,
            f"PostgreSQL {version} on loopback, idle_session_timeout {idle_ms} ms",
            server,
        )


# -- one run ----------------------------------------------------------------------------


class _Fleet:
    """The driver's view of one run's instances: when each was frozen, what it held."""

    def __init__(self, function: EmulatedFunction) -> None:
        self.function = function
        self.last_end: dict[str, float] = {}
        self.connects: dict[str, int] = {}

    def instance(self, name: str) -> LambdaInstance | None:
        for instance in list(self.function.instances):
            if instance.name == name:
                return instance
        return None

    def frozen_since(self, name: str) -> float | None:
        instance = self.instance(name)
        if instance is None or not instance.frozen:
            return None
        return self.last_end.get(name)


def _environment(
    strategy: StrategySpec, params: FleetParams, conninfo: str, app_name: str
) -> dict[str, str]:
    env = {
        "FLEET_STRATEGY": strategy.name,
        "FLEET_DATABASE_URL": make_conninfo(conninfo, application_name=app_name),
        "FLEET_DB_SECONDS": repr(params.db_time),
        "FLEET_APP_SECONDS": repr(params.app_time),
        "FLEET_EXTENSION": "1" if strategy.extension else "0",
        "SERVERLESS_POOL_ACQUIRE_TIMEOUT": repr(params.request_timeout),
        # As on Lambda the pool sets idle_session_timeout on its sessions (900 s by
        # default): here the simulation's. Behind a proxy it would not be applied.
        "SERVERLESS_POOL_IDLE_SESSION_TIMEOUT": repr(0 if strategy.proxy else params.idle_timeout),
    }
    if strategy.proxy:
        env["SERVERLESS_POOL_PROXY_MODE"] = "pgbouncer-transaction"
    return env


def _run(
    shape: Shape, strategy: StrategySpec, params: FleetParams, target: _Target, counter: _Counter
) -> RunResult:
    app_name = f"sp-fleet-{shape.name}-{strategy.name}"
    result = RunResult(shape.name, strategy.name, params.budget, extension=strategy.extension)
    began = time.monotonic()
    log_mark = target.log_length()
    with contextlib.ExitStack() as stack:
        # Runs last, once the instances and PgBouncer are gone.
        stack.callback(_wait_for_fleet_gone, target.monitor, app_name)
        conninfo = target.conninfo
        if strategy.proxy:
            from ..testing.pgbouncer import PgBouncerServer

            bouncer = PgBouncerServer(
                target.server,
                default_pool_size=params.budget,
                connect_query="SET idle_session_timeout = 0",
                settings={"max_client_conn": str(shape.users + 50)},
            )
            stack.enter_context(bouncer)
            conninfo = bouncer.conninfo()
        function = EmulatedFunction(
            HANDLER,
            max_instances=shape.instances,
            max_concurrency=shape.workers,
            snapstart=params.snapstart and not shape.managed,
            queue_timeout=params.request_timeout,
            env=_environment(strategy, params, conninfo, app_name),
            function_name=app_name,
            timeout=params.request_timeout,
            count_connections=False,
        )
        stack.enter_context(function)
        if function.snapshot is not None:
            # SnapStart takes its snapshot when the version is published, before traffic.
            function.snapshot.take()
        if shape.managed:
            # A capacity provider starts Managed Instances environments ahead of traffic.
            function.provision(shape.instances)
        fleet = _Fleet(function)
        t0 = time.monotonic() + 0.05
        monitor = ServerMonitor(
            target.monitor, app_name, frozen_since=fleet.frozen_since, origin=t0
        )
        stack.enter_context(monitor)
        _traffic(shape, strategy, params, fleet, monitor, result, counter, t0)
        traffic_end = time.monotonic() - t0
        watched = _shut_down(fleet, monitor, result, params)
        result.seconds = time.monotonic() - t0
        _summarize(result, monitor, fleet, traffic_end, shape)
        # PostgreSQL's own log is the witness of why sessions ended.
        ended = target.idle_timeouts(log_mark)
        if ended is not None:
            result.idle_timeouts = len(ended)
            result.shutdown_idle_timeouts = len(ended & watched)
    if result.seconds == 0.0:
        result.seconds = time.monotonic() - began
    return result


def _traffic(
    shape: Shape,
    strategy: StrategySpec,
    params: FleetParams,
    fleet: _Fleet,
    monitor: ServerMonitor,
    result: RunResult,
    counter: _Counter,
    t0: float,
) -> None:
    event = http_api_event("GET", "/")
    lock = threading.Lock()

    def user(wave: int, at: float) -> None:
        _sleep_until(at)
        for n in range(params.burst):
            if n:
                time.sleep(params.think)
            sent = time.monotonic()
            request = _invoke(fleet, event, wave, sent - t0, params, strategy, monitor)
            with lock:
                result.requests.append(request)
            counter.tick()

    start = t0
    with ThreadPoolExecutor(max_workers=shape.users, thread_name_prefix="fleet-user") as users:
        for wave in range(params.waves):
            offsets = arrivals(params, shape.name, wave, shape.users)
            futures = [users.submit(user, wave, start + offset) for offset in offsets]
            for future in futures:
                future.result()
            start = time.monotonic() + params.pause
            if wave + 1 < params.waves:
                _sleep_until(start)
    planned = shape.users * params.burst * params.waves
    result.missing = max(0, planned - len(result.requests))


def _invoke(
    fleet: _Fleet,
    event: dict[str, Any],
    wave: int,
    sent: float,
    params: FleetParams,
    strategy: StrategySpec,
    monitor: ServerMonitor,
) -> Request:
    began = time.monotonic()
    try:
        answer = fleet.function.invoke(event)
    except TimeoutError:
        return Request(wave, sent, time.monotonic() - began, "warm", "no instance free", "")
    seconds = time.monotonic() - began
    fleet.last_end[answer.instance] = time.monotonic()
    kind = "cold" if answer.cold_start else "warm"
    if answer.status != "ok":
        return Request(wave, sent, seconds, kind, f"function {answer.status}", answer.instance)
    payload = answer.payload if isinstance(answer.payload, dict) else {}
    try:
        body = json.loads(payload.get("body") or "{}")
    except ValueError:
        body = {}
    idle = body.get("idle")
    if kind == "warm" and isinstance(idle, int | float) and idle >= params.idle_timeout:
        kind = "thawed"
    process = answer.instance if answer.worker is None else f"{answer.instance}/{answer.worker}"
    if isinstance(body.get("connects"), int):
        fleet.connects[process] = max(fleet.connects.get(process, 0), body["connects"])
    backend = body.get("backend")
    if strategy.holds_session and isinstance(backend, int):
        monitor.own(backend, answer.instance)
    error = None
    if payload.get("statusCode") != 200:
        error = str(body.get("error") or f"HTTP {payload.get('statusCode')}")
    return Request(wave, sent, seconds, kind, error, answer.instance)


def _shut_down(
    fleet: _Fleet, monitor: ServerMonitor, result: RunResult, params: FleetParams
) -> set[int]:
    """Lambda reclaims every environment at once; watch their sessions end.

    Timed are the sessions with at least half the server's idle timeout still to live
    when the shutdowns begin (its instance frozen for less than half of it): an older one
    may be ended by the server just as well, whatever the instance does. Returns them.
    """
    instances = [i for i in fleet.function.instances if i.alive]
    now = time.monotonic()
    fresh = {
        pid
        for pid, owner in monitor.sessions_of(i.name for i in instances).items()
        if now - fleet.last_end.get(owner, now) <= params.idle_timeout / 2
    }
    monitor.watch_shutdown(fresh)
    result.open_at_shutdown = len(fresh)
    sigterms = []

    def end(instance: LambdaInstance) -> None:
        monitor.shutdown_started(instance.name)
        # Not EmulatedFunction.shutdown(): its close() would reap at once what Lambda
        # leaves to the server's timeout (an environment gone without a signal).
        sigterms.append(instance.shutdown().sigterm)

    threads = [threading.Thread(target=end, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    result.shutdowns = len(instances)
    result.sigterms = sum(sigterms)
    monitor.wait_gone(fresh, timeout=params.idle_timeout + 2.0)
    return fresh


def _summarize(
    result: RunResult, monitor: ServerMonitor, fleet: _Fleet, traffic_end: float, shape: Shape
) -> None:
    samples = list(monitor.samples)
    during = [s for s in samples if 0 <= s[0] <= traffic_end] or samples
    result.peak_connections = max((s[1] for s in samples), default=0)
    result.mean_connections = sum(s[1] for s in during) / len(during) if during else 0.0
    if not shape.managed:
        result.frozen_peak = max((s[2] for s in samples), default=0)
        result.frozen_mean = sum(s[2] for s in during) / len(during) if during else 0.0
    result.frozen_release = Spread.of(monitor.releases_after_freeze)
    result.shutdown_release = Spread.of(monitor.releases_after_shutdown)
    result.timeline = Timeline.of(samples)
    result.connects = sum(fleet.connects.values())
    result.environments = len(fleet.function.instances)
    result.crashes = [
        f"{r.instance}: {r.error}" for r in result.requests if r.error in _FUNCTION_FAILURES
    ]


def _wait_for_fleet_gone(monitor: str, app_name: str, timeout: float = 10.0) -> None:
    """Leave the server empty for the next run (the instances are gone by now)."""
    with psycopg.connect(monitor, autocommit=True) as conn:
        conn.execute("SET idle_session_timeout = 0")
        deadline = time.monotonic() + timeout
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND application_name = %s"
        )
        while time.monotonic() < deadline:
            row = conn.execute(query, (app_name,)).fetchone()
            if row is None or row[0] == 0:
                return
            time.sleep(0.05)
        with contextlib.suppress(psycopg.Error):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND application_name = %s",
                (app_name,),
            )


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)
