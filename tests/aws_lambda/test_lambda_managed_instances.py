"""Lambda Managed Instances: one environment, the real `awslambdaric` with
``AWS_LAMBDA_MAX_CONCURRENCY`` worker processes, concurrent events.

The witness is ``pg_stat_activity``: however hard the environment is loaded, it holds
at most one server session per worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from lambda_testkit import FUNCTIONS, concurrently

from serverless_pool.settings import (
    PoolSettings,
    running_on_managed_instances,
    workers_per_environment,
)
from serverless_pool.testing.lambda_emulator import (
    EmulatedFunction,
    InvocationResult,
    LambdaInstance,
    http_api_event,
)
from serverless_pool.testing.postgres import PostgresServer

WORKERS = 4
CLIENTS = 4
REQUESTS_PER_CLIENT = 25


def get(path: str) -> dict[str, Any]:
    return http_api_event("GET", path, [("Host", "localhost")])


@pytest.fixture
def environment(db_env: dict[str, str]) -> Iterator[LambdaInstance]:
    instance = LambdaInstance(
        "pool_function.handler", cwd=FUNCTIONS, env=db_env, max_concurrency=WORKERS
    )
    try:
        instance.start()
        assert instance.wait_workers(WORKERS), instance.output()[-2000:]
        yield instance
    finally:
        instance.close()


def load(instance: LambdaInstance, path: str = "/?seconds=0.01") -> list[InvocationResult]:
    """CLIENTS threads, each sending REQUESTS_PER_CLIENT events one after another."""
    return concurrently(lambda: instance.invoke(get(path)), CLIENTS, REQUESTS_PER_CLIENT)


def failures(results: list[InvocationResult]) -> list[Any]:
    return [r.payload for r in results if not r.ok or r.payload.get("statusCode") != 200]


def test_workers_each_hold_one_connection_under_concurrent_load(
    environment: LambdaInstance, postgres: PostgresServer, app_name: str
) -> None:
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(postgres.backends(application_name=app_name)))
            done.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = load(environment)
    finally:
        done.set()
        watcher.join(30)
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    assert failures(results) == []
    bodies = [json.loads(r.payload["body"]) for r in results]
    served_by = {b["pid"] for b in bodies}
    assert served_by <= set(environment.workers())
    assert len(served_by) >= 2  # the load really was spread over workers
    # Each worker is one process serving one request at a time: max_size 1 each.
    assert {(b["max_size"], b["managed"], b["workers"]) for b in bodies} == {(1, True, WORKERS)}
    assert {b["ping_after_idle"] for b in bodies} == {60.0}
    assert 1 <= peak <= WORKERS
    assert len(postgres.backends(application_name=app_name)) <= WORKERS
    # One extension for the whole environment: the first worker registered it, and
    # the others' expected refusals are no warning.
    assert [e.name for e in environment.extensions] == ["serverless-pool"]
    assert "could not register" not in environment.output()


def test_backends_ended_while_idle_cost_no_failed_request(
    environment: LambdaInstance, postgres: PostgresServer, app_name: str
) -> None:
    assert failures(load(environment)) == []
    held = postgres.backends(application_name=app_name)
    assert held
    # The server ends every session while the workers are idle (never frozen).
    assert postgres.terminate_backends(application_name=app_name) == len(held)
    results = load(environment)
    assert failures(results) == []
    after = {b.pid for b in postgres.backends(application_name=app_name)}
    assert not after & {b.pid for b in held}
    assert len(after) <= WORKERS
    replaced = sum(
        count
        for r in results
        for key, count in json.loads(r.payload["body"])["stats"].items()
        if key.startswith("replaced_")
    )
    assert replaced >= 1


def test_sigterm_reaches_every_worker(
    environment: LambdaInstance, postgres: PostgresServer, app_name: str
) -> None:
    assert failures(load(environment)) == []
    assert postgres.backends(application_name=app_name)
    ended = environment.shutdown()
    assert (ended.sigterm, ended.graceful) == (True, True)
    assert postgres.wait_for_backends(0, application_name=app_name) == []


def test_an_environment_rejects_more_events_than_workers(db_env: dict[str, str]) -> None:
    with LambdaInstance(
        "pool_function.handler", cwd=FUNCTIONS, env=db_env, max_concurrency=2
    ) as instance:
        instance.start()
        assert instance.wait_workers(2)
        results = concurrently(lambda: instance.invoke(get("/?seconds=1")), 4)
    statuses = sorted(r.status for r in results)
    assert statuses == ["ok", "ok", "throttled", "throttled"]


def test_a_function_queues_what_its_environments_cannot_take(db_env: dict[str, str]) -> None:
    with EmulatedFunction(
        "pool_function.handler", cwd=FUNCTIONS, env=db_env, max_concurrency=2
    ) as function:
        results = concurrently(lambda: function.invoke(get("/?seconds=0.2")), 5)
        assert len(function.instances) == 1
    assert sorted(r.status for r in results) == ["ok"] * 5


def test_the_mode_is_detected_as_awslambdaric_does() -> None:
    managed = {"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_MAX_CONCURRENCY": "32"}
    assert running_on_managed_instances(managed)
    assert workers_per_environment(managed) == 32
    flagged = {
        "AWS_LAMBDA_FUNCTION_NAME": "f",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances",
    }
    assert running_on_managed_instances(flagged)
    on_demand = {"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"}
    assert not running_on_managed_instances(on_demand)
    assert workers_per_environment(on_demand) == 1
    settings = PoolSettings.load(environ=managed)
    assert (settings.max_size, settings.ping_after_idle) == (1, 60.0)
    assert PoolSettings.load(environ=on_demand).ping_after_idle == 5.0
    assert PoolSettings.load({"ping_after_idle": 2}, environ=managed).ping_after_idle == 2.0
