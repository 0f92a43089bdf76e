"""Graceful shutdown that happens: the witness is PostgreSQL's ``pg_stat_activity``.

Without an extension, Lambda sends no SIGTERM: the server keeps the instance's
session until its own ``idle_session_timeout`` ends it. With `make_handler`'s default
(a no-op internal extension), SIGTERM arrives and the server sees the session end
within the 500 ms shutdown budget.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lambda_testkit import FUNCTIONS, wait_until

from serverless_pool.testing.lambda_emulator import LambdaInstance, http_api_event
from serverless_pool.testing.postgres import PostgresServer

SHUTDOWNS = 20


def get(path: str) -> dict[str, Any]:
    return http_api_event("GET", path, [("Host", "localhost")])


def backend_of(instance: LambdaInstance) -> int:
    result = instance.invoke(get("/"))
    assert result.ok, result.payload
    assert result.payload["statusCode"] == 200, result.payload
    backend: int = json.loads(result.payload["body"])["backend"]
    return backend


@pytest.fixture
def instances() -> Iterator[list[LambdaInstance]]:
    made: list[LambdaInstance] = []
    yield made
    for instance in made:
        instance.close()


def test_without_the_extension_the_server_keeps_the_session_until_its_idle_timeout(
    db_env: dict[str, str],
    postgres: PostgresServer,
    app_name: str,
    instances: list[LambdaInstance],
) -> None:
    env = {**db_env, "REGISTER_EXTENSION": "0", "SERVERLESS_POOL_IDLE_SESSION_TIMEOUT": "2"}
    instance = LambdaInstance("pool_function.handler", cwd=FUNCTIONS, env=env)
    instances.append(instance)
    backend = backend_of(instance)
    assert instance.extensions == []
    instance.freeze()
    ended = instance.shutdown()
    assert not ended.sigterm
    assert "SIGTERM" not in instance.output()
    # The instance is gone; its session is not.
    assert [b.pid for b in postgres.backends(application_name=app_name)] == [backend]
    # The server ends it when its idle_session_timeout (2 s here, 900 s by default on
    # Lambda) runs out, and says why.
    assert postgres.wait_for_backends(0, application_name=app_name, timeout=30) == []
    assert wait_until(
        lambda: "terminating connection due to idle-session timeout" in postgres.log_tail(100_000)
    )


@pytest.mark.slow
def test_with_the_default_extension_sigterm_ends_the_session_within_the_budget(
    db_env: dict[str, str],
    postgres: PostgresServer,
    app_name: str,
    instances: list[LambdaInstance],
) -> None:
    process_exit: list[float] = []
    session_gone: list[float] = []
    for _ in range(SHUTDOWNS):
        instance = LambdaInstance("pool_function.handler", cwd=FUNCTIONS, env=db_env)
        instances.append(instance)
        backend = backend_of(instance)
        assert [e.name for e in instance.extensions] == ["serverless-pool"]
        instance.freeze()  # as between invocations
        ended = instance.shutdown()
        assert ended.sigterm
        assert ended.graceful, instance.output()[-2000:]  # exited before the SIGKILL
        assert ended.budget == 0.5

        def gone(pid: int = backend) -> bool:
            return pid not in {b.pid for b in postgres.backends(application_name=app_name)}

        # Generous slack for a shared machine; the measured numbers are printed below.
        assert wait_until(gone, timeout=ended.budget + 5)
        process_exit.append(ended.seconds)
        session_gone.append(time.monotonic() - ended.started)
    assert len(session_gone) == SHUTDOWNS
    print(
        f"{SHUTDOWNS} shutdowns: SIGTERM to process exit median"
        f" {statistics.median(process_exit) * 1000:.1f} ms, max {max(process_exit) * 1000:.1f} ms;"
        f" SIGTERM to session gone from pg_stat_activity (polled) median"
        f" {statistics.median(session_gone) * 1000:.1f} ms, max {max(session_gone) * 1000:.1f} ms"
    )
