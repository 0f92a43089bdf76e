"""The local Lambda emulator driving real `awslambdaric` processes.

Each instance is a real ``python -m awslambdaric`` process talking to our Runtime API;
the database is the shared test server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lambda_testkit import FUNCTIONS, REPO

from serverless_pool.testing.lambda_emulator import (
    EmulatedFunction,
    HttpFront,
    InitError,
    LambdaInstance,
    http_api_event,
)
from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

MakeInstance = Callable[..., LambdaInstance]


@pytest.fixture
def make_instance() -> Iterator[MakeInstance]:
    instances: list[LambdaInstance] = []

    def make(handler: str = "plain_function.handler", **options: Any) -> LambdaInstance:
        options.setdefault("cwd", FUNCTIONS)
        instance = LambdaInstance(handler, **options)
        instances.append(instance)
        return instance

    yield make
    for instance in instances:
        instance.close()


@pytest.fixture
def db_env(postgres: PostgresServer, app_name: str) -> dict[str, str]:
    return {
        "SERVERLESS_POOL_DATABASE_URL": postgres.url(),
        "SERVERLESS_POOL_APPLICATION_NAME": app_name,
    }


def get(path: str) -> dict[str, Any]:
    return http_api_event("GET", path, [("Host", "localhost")])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- the Runtime API and the instance's life ------------------------------------------


def test_invocation_carries_the_runtime_headers(make_instance: MakeInstance) -> None:
    instance = make_instance(function_name="headers-fn", timeout=5)
    result = instance.invoke({"hello": "world"})
    assert result.ok
    assert result.cold_start
    body = result.payload
    assert body["event"] == {"hello": "world"}
    assert body["request_id"] == result.request_id
    assert body["function_arn"] == instance.function_arn
    assert body["function_name"] == "headers-fn"
    assert 0 < body["remaining_ms"] <= 5000
    assert body["trace_id"].startswith("Root=1-")
    again = instance.invoke({})
    assert again.ok
    assert not again.cold_start
    assert again.payload["pid"] == body["pid"]


def test_errors_crashes_and_timeouts(make_instance: MakeInstance) -> None:
    instance = make_instance(timeout=5)
    failed = instance.invoke({"fail": True})
    assert failed.status == "error"
    assert failed.payload["errorType"] == "ValueError"
    assert failed.payload["errorMessage"] == "failed on purpose"

    crashed = instance.invoke({"crash": True})
    assert crashed.status == "crash"
    after_crash = instance.invoke({})
    assert after_crash.ok
    assert after_crash.cold_start

    timed_out = instance.invoke({"sleep": 30}, timeout=1)
    assert timed_out.status == "timeout"
    assert not instance.alive  # Lambda ends the environment at a timeout
    after_timeout = instance.invoke({})
    assert after_timeout.ok
    assert after_timeout.cold_start
    assert instance.inits == 3


def test_init_error_is_reported(make_instance: MakeInstance) -> None:
    instance = make_instance(env={"PLAIN_FUNCTION_INIT_FAIL": "1"})
    with pytest.raises(InitError, match="init failed on purpose"):
        instance.start()


def test_freeze_and_thaw(make_instance: MakeInstance) -> None:
    instance = make_instance()
    first = instance.invoke({})
    instance.freeze()
    assert instance.frozen
    with open(f"/proc/{instance.pid}/stat") as stat:
        assert stat.read().split(")")[1].split()[0] == "T"  # stopped
    second = instance.invoke({})
    assert second.ok
    assert not instance.frozen
    assert second.payload["pid"] == first.payload["pid"]


def test_shutdown_sends_sigterm_then_sigkill(make_instance: MakeInstance) -> None:
    polite = make_instance()
    polite.invoke({})
    polite.freeze()
    ended = polite.shutdown(grace=2)
    assert ended.graceful  # Python's default SIGTERM disposition ends the process

    stubborn = make_instance(env={"PLAIN_FUNCTION_IGNORE_SIGTERM": "1"})
    stubborn.invoke({})
    stubborn.freeze()
    killed = stubborn.shutdown(grace=0.3)
    assert not killed.graceful
    assert killed.returncode == -signal.SIGKILL


def test_several_instances_at_once() -> None:
    with EmulatedFunction(
        "plain_function.handler", max_instances=3, cwd=FUNCTIONS, timeout=10
    ) as function:
        results: list[Any] = []
        lock = threading.Lock()

        def invoke() -> None:
            result = function.invoke({"sleep": 0.3})
            with lock:
                results.append(result)

        threads = [threading.Thread(target=invoke) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 6
        assert all(r.ok for r in results)
        pids = {r.payload["pid"] for r in results}
        assert 2 <= len(pids) <= 3
        assert len(function.instances) == len(pids)


# -- the pool inside real instances ---------------------------------------------------


def test_frozen_instance_survives_its_connection_ending(
    make_instance: MakeInstance, db_env: dict[str, str], postgres: PostgresServer, app_name: str
) -> None:
    instance = make_instance("flask_function.handler", env=db_env)
    first = instance.invoke(get("/pid"))
    assert first.ok, first.payload
    old_pid = json.loads(first.payload["body"])["pid"]
    instance.freeze()
    # While frozen, the server ends the session (idle_session_timeout, a proxy, a NAT).
    assert postgres.terminate_backends(pids=[old_pid]) == 1
    second = instance.invoke(get("/pid"))
    assert second.ok, second.payload
    assert second.payload["statusCode"] == 200, second.payload
    body = json.loads(second.payload["body"])
    assert body["pid"] != old_pid
    assert any(key.startswith("replaced_") for key in body["stats"])
    # One EMF line per invocation, without the password.
    output = instance.output()
    emf = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    assert len(emf) == 2
    assert emf[1]["ReplacedConnections"] == 1
    assert APP_PASSWORD not in output


def test_timeout_in_a_query_leaves_no_transaction_open(
    make_instance: MakeInstance, db_env: dict[str, str], postgres: PostgresServer, app_name: str
) -> None:
    instance = make_instance(
        "flask_function.handler", env={**db_env, "DEADLINE_MARGIN": "0"}, timeout=2
    )
    result = instance.invoke(get("/slow"))
    assert result.status in ("timeout", "ok")  # killed, or the server canceled first
    # The query asked for 60 s; the deadline's statement_timeout ends it at ~2 s.
    assert wait_until(
        lambda: (
            not [
                b
                for b in postgres.backends(application_name=app_name)
                if b.state in ("active", "idle in transaction", "idle in transaction (aborted)")
            ]
        ),
        timeout=15,
    )


def test_sigterm_closes_the_pool(
    make_instance: MakeInstance, db_env: dict[str, str], postgres: PostgresServer, app_name: str
) -> None:
    instance = make_instance("flask_function.handler", env=db_env)
    assert instance.invoke(get("/pid")).ok
    assert len(postgres.backends(application_name=app_name)) == 1
    instance.freeze()
    started = time.monotonic()
    ended = instance.shutdown(grace=3)  # Lambda allows 0.3 s; measured, not asserted
    assert ended.graceful, instance.output()[-2000:]
    assert ended.returncode == -signal.SIGTERM
    assert postgres.wait_for_backends(0, application_name=app_name) == []
    print(f"SIGTERM to process exit: {ended.seconds * 1000:.1f} ms;"
          f" to session gone: {(time.monotonic() - started) * 1000:.1f} ms")  # fmt: skip


def test_snapstart_snapshot_holds_no_connection(
    make_instance: MakeInstance, db_env: dict[str, str], postgres: PostgresServer, app_name: str
) -> None:
    instance = make_instance(
        "flask_function.handler", env={**db_env, "CONNECT_ON_INIT": "1"}, snapstart=True
    )
    instance.start()
    assert instance.snapshotted
    # Init connected, then the before-snapshot hook closed it: a snapshot restored many
    # times must not carry one server session into every copy.
    assert postgres.wait_for_backends(0, application_name=app_name) == []
    result = instance.invoke(get("/pid"))
    assert result.ok, result.payload
    stats = json.loads(result.payload["body"])["stats"]
    assert stats["connections_opened"] == 2  # at init, then lazily after the restore
    assert len(postgres.backends(application_name=app_name)) == 1


# -- the HTTP front and the command line ----------------------------------------------


def test_http_front_answers_curl(db_env: dict[str, str]) -> None:
    with (
        EmulatedFunction("flask_function.handler", cwd=FUNCTIONS, env=db_env) as function,
        HttpFront(function) as front,
    ):
        out = subprocess.run(
            ["curl", "-sS", "-i", f"{front.url}/pid"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    head, _, body = out.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 200")
    assert isinstance(json.loads(body)["pid"], int)


def test_command_line_serves_and_shuts_down(db_env: dict[str, str]) -> None:
    from serverless_pool.testing.postgres import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serverless_pool.testing.lambda_emulator",
         "plain_function.handler", "--port", str(port), "--cwd", str(FUNCTIONS),
         "--env", f"SERVERLESS_POOL_DATABASE_URL={db_env['SERVERLESS_POOL_DATABASE_URL']}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"127.0.0.1:{port}" in banner
        out = subprocess.run(
            ["curl", "-sS", f"http://127.0.0.1:{port}/hello?x=1"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        event = json.loads(out.stdout)["event"]
        assert (event["rawPath"], event["rawQueryString"]) == ("/hello", "x=1")
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert APP_PASSWORD not in banner + rest
