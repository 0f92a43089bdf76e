"""The local Lambda emulator against AWS's contract, driving real `awslambdaric` processes.

Each instance is a real ``python -m awslambdaric`` process talking to our Runtime and
Extensions APIs. The contract comes from AWS's documentation and AWS's own runtime
interface emulator: who may register what, when init is over, what a freeze stops,
and what shutdown sends, when.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_testkit import FUNCTIONS, REPO, concurrently, wait_until

from serverless_pool.testing.lambda_emulator import (
    EmulatedFunction,
    HttpFront,
    InitError,
    LambdaInstance,
    RuntimeApi,
    http_api_event,
)
from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

MakeInstance = Callable[..., LambdaInstance]
EXTERNAL = FUNCTIONS / "external_extension.py"


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


def _api_call(
    api: RuntimeApi, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection(api.address, timeout=5)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        return response.status, dict(response.getheaders()), json.loads(payload or b"null")
    finally:
        conn.close()


def get(path: str) -> dict[str, Any]:
    return http_api_event("GET", path, [("Host", "localhost")])


def _register(api: RuntimeApi, name: str, events: list[str]) -> tuple[int, dict[str, str], Any]:
    headers = {"Lambda-Extension-Name": name} if name else {}
    return _api_call(api, "POST", "/2020-01-01/extension/register", {"events": events}, headers)


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
    assert (result.instance, result.connections_opened) == (instance.name, 0)


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


def test_freeze_stops_every_thread_of_the_environment(make_instance: MakeInstance) -> None:
    instance = make_instance()
    first = instance.invoke({})
    instance.freeze()
    assert instance.frozen
    # SIGSTOP: the kernel shows every thread of the process stopped, none runnable.
    tasks = list(Path(f"/proc/{instance.pid}/task").iterdir())
    assert len(tasks) >= 2  # awslambdaric polls for the next event on a thread
    states = {(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks}
    assert states <= {"T", "t"}, states
    second = instance.invoke({})
    assert second.ok
    assert not instance.frozen
    assert second.payload["pid"] == first.payload["pid"]


def test_function_output_is_passed_through(make_instance: MakeInstance) -> None:
    lines: list[tuple[str, str]] = []
    instance = make_instance(on_output=lambda name, line: lines.append((name, line)))
    assert instance.invoke({"print": "hello from the function"}).ok
    assert wait_until(lambda: (instance.name, "hello from the function\n") in lines)
    assert "hello from the function" in instance.output()


# -- the Extensions API ------------------------------------------------------------------


def test_extension_registration_follows_the_contract() -> None:
    api = RuntimeApi(function_name="fn", handler="app.handler", external_names=["ext-a"]).start()
    try:
        status, _h, body = _register(api, "", [])
        assert (status, body["errorType"]) == (403, "Extension.InvalidExtensionName")
        status, _h, body = _register(api, "mine", ["SHUTDOWN"])
        assert (status, body["errorType"]) == (403, "Extension.InvalidEventType")
        assert "ShutdownEventNotSupportedForInternalExtension" in body["errorMessage"]
        status, _h, body = _register(api, "mine", ["FLUSH"])
        assert (status, body["errorType"]) == (403, "Extension.InvalidEventType")
        status, headers, body = _register(api, "ext-a", ["INVOKE", "SHUTDOWN"])
        assert status == 200
        assert body == {
            "functionName": "fn",
            "functionVersion": "$LATEST",
            "handler": "app.handler",
        }
        assert headers["Lambda-Extension-Identifier"]
        status, headers, _ = _register(api, "mine", [])
        assert status == 200
        assert [(e.name, e.kind) for e in api.extensions] == [
            ("ext-a", "external"),
            ("mine", "internal"),
        ]
        status, _h, body = _register(api, "mine", [])
        assert (status, body["errorType"]) == (403, "Extension.InvalidExtensionState")
        for n in range(8):
            assert _register(api, f"x{n}", [])[0] == 200
        status, _h, body = _register(api, "eleventh", [])
        assert (status, body["errorType"]) == (403, "Extension.TooManyExtensions")
        status, _h, body = _api_call(api, "GET", "/2020-01-01/extension/event/next")
        assert (status, body["errorType"]) == (403, "Extension.MissingExtensionIdentifier")
        status, _h, body = _api_call(
            api,
            "GET",
            "/2020-01-01/extension/event/next",
            headers={"Lambda-Extension-Identifier": "no-such-id"},
        )
        assert (status, body["errorType"]) == (403, "Extension.UnknownExtensionIdentifier")
        api.close_registration()  # what the runtime's first `next` does
        status, _h, body = _register(api, "late", [])
        assert (status, body["errorType"]) == (403, "Extension.RegistrationClosed")
    finally:
        api.stop()


def test_init_waits_for_every_registered_extension(make_instance: MakeInstance) -> None:
    instance = make_instance(env={"PLAIN_FUNCTION_EXTENSION": "1"})
    instance.start()
    (extension,) = instance.extensions
    assert (extension.name, extension.kind, extension.events) == ("serverless-pool", "internal", ())
    assert extension.ready  # it called next: init could end


def test_without_an_extension_there_is_no_sigterm(make_instance: MakeInstance) -> None:
    instance = make_instance()
    instance.invoke({})
    instance.freeze()
    ended = instance.shutdown()
    assert not ended.sigterm
    assert "SIGTERM" not in instance.output()


def test_internal_extension_gets_sigterm_within_half_a_second(make_instance: MakeInstance) -> None:
    polite = make_instance(env={"PLAIN_FUNCTION_EXTENSION": "1"})
    polite.invoke({})
    polite.freeze()
    ended = polite.shutdown()
    assert (ended.sigterm, ended.graceful, ended.budget) == (True, True, 0.5)
    assert "SIGTERM received" in polite.output()

    stubborn = make_instance(
        env={"PLAIN_FUNCTION_EXTENSION": "1", "PLAIN_FUNCTION_IGNORE_SIGTERM": "1"}
    )
    stubborn.invoke({})
    stubborn.freeze()
    pid = stubborn.pid
    killed = stubborn.shutdown()
    assert (killed.sigterm, killed.graceful) == (True, False)
    assert pid is not None
    # Killed: gone for the outside world, stopped until the emulator reaps it.
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_external_extension_gets_invoke_and_shutdown_events(make_instance: MakeInstance) -> None:
    instance = make_instance(env={"PLAIN_FUNCTION_EXTENSION": "1"}, extensions=[EXTERNAL])
    assert instance.invoke({}).ok
    kinds = sorted((e.name, e.kind) for e in instance.extensions)
    assert kinds == [("external_extension.py", "external"), ("serverless-pool", "internal")]
    instance.freeze()
    ended = instance.shutdown()
    # Runtime first (0.5 s: an internal extension is registered too), then the
    # extensions, within the 2 s phase.
    assert (ended.sigterm, ended.graceful, ended.budget) == (True, True, 0.5)
    output = instance.output()
    assert "external_extension.py: INVOKE" in output
    assert "external_extension.py: SHUTDOWN spindown" in output
    assert output.index("SIGTERM received") < output.index("SHUTDOWN spindown")


def test_several_instances_at_once() -> None:
    with EmulatedFunction(
        "plain_function.handler", max_instances=3, cwd=FUNCTIONS, timeout=10
    ) as function:
        results = concurrently(lambda: function.invoke({"sleep": 0.3}), 6)
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
    assert wait_until(lambda: instance.output().count('{"_aws"') >= 2)
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


def test_command_line_prints_each_invocation_and_the_output(db_env: dict[str, str]) -> None:
    from serverless_pool.testing.postgres import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serverless_pool.testing.lambda_emulator",
         "flask_function.handler", "--port", str(port), "--cwd", str(FUNCTIONS),
         *[f"--env={k}={v}" for k, v in db_env.items()]],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"127.0.0.1:{port}" in banner
        for _ in range(2):
            subprocess.run(
                ["curl", "-sS", f"http://127.0.0.1:{port}/pid"],
                capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
        out = subprocess.run(
            ["curl", "-sS", f"http://127.0.0.1:{port}/no-such-page"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert "Not Found" in out.stdout
        failed = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/boom"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert failed.stdout == "500"
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    lines = rest.splitlines()
    invocations = [line for line in lines if " ms connections opened: " in line]
    assert len(invocations) == 4, rest
    first, second, third, fourth = (line.split() for line in invocations)
    assert first[1:3] == ["cold", "ok"] and first[-1] == "1"  # noqa: PT018
    assert second[1:3] == ["warm", "ok"] and second[-1] == "0"  # noqa: PT018
    assert third[1:3] == ["warm", "ok"]  # a 404 is a response, not a failed invocation
    assert fourth[1:3] == ["warm", "ok"]  # and so is Flask's 500
    # The function's own output comes through, prefixed by the instance: its EMF lines,
    # and the traceback Flask logs for the 500.
    assert any(line.startswith("[i") and '"_aws"' in line for line in lines), rest
    assert any(line.startswith("[i") and "RuntimeError: boom on purpose" in line for line in lines)
    assert APP_PASSWORD not in banner + rest


def test_an_extension_registered_after_init_is_refused_with_advice(
    make_instance: MakeInstance,
) -> None:
    instance = make_instance()
    late = instance.invoke({"register_extension": True})
    assert late.payload == {"registered": False}
    assert instance.extensions == []
    assert wait_until(lambda: "registration was closed" in instance.output())
    assert "call make_handler() at import time" in instance.output()
