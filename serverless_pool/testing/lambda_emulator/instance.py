"""One emulated Lambda execution environment: a real ``python -m awslambdaric`` process.

It goes through Lambda's life: init (cold start), invocations with a deadline, freeze
(SIGSTOP) while it waits for its next event and thaw (SIGCONT) before one is delivered,
a timeout (the process is killed, the next event re-inits), a crash, and shutdown
(SIGTERM, then SIGKILL after the grace period).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .runtime_api import Invocation, RuntimeApi, deadline_ms

__all__ = ["InitError", "InvocationResult", "LambdaInstance", "ShutdownResult"]

_POLL = 0.01
_THAW_SETTLE = 0.02
Status = Literal["ok", "error", "timeout", "crash"]


class InitError(RuntimeError):
    """The function failed in its init phase (reported, crashed or too slow)."""


@dataclass
class InvocationResult:
    """What one invocation returned, as the Lambda service would see it."""

    request_id: str
    status: Status
    payload: Any  # the decoded JSON response (or error document)
    seconds: float
    cold_start: bool

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ShutdownResult:
    """How an instance ended: by itself after SIGTERM, or killed after the grace period."""

    graceful: bool
    seconds: float
    returncode: int | None


class LambdaInstance:
    """An execution environment running `handler` (``module.function``).

    :param env: extra environment variables for the function (e.g. the database URL).
    :param cwd: the function's code directory (``LAMBDA_TASK_ROOT``), on ``PYTHONPATH``.
    :param timeout: the function timeout, in seconds (the deadline of each invocation).
    :param init_timeout: how long init may take (Lambda allows 10 s).
    """

    def __init__(
        self,
        handler: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        function_name: str = "emulated-function",
        timeout: float = 30.0,
        init_timeout: float = 10.0,
        memory_mb: int = 512,
        snapstart: bool = False,
        python: str = sys.executable,
    ) -> None:
        self.handler = handler
        self.function_name = function_name
        self.timeout = timeout
        self.init_timeout = init_timeout
        self.memory_mb = memory_mb
        self.snapstart = snapstart
        #: SnapStart: init is done and the process is held at the snapshot point.
        self.snapshotted = False
        self._env = dict(env or {})
        self._cwd = Path(cwd) if cwd is not None else Path.cwd()
        self._python = python
        self._api = RuntimeApi()
        self._api.start()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="lambda-instance-", suffix=".log")  # noqa: SIM115
        self.frozen = False
        self.inits = 0
        self._fresh = False
        self.function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"

    # -- process -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> float:
        """Init: start the runtime process and wait until it asks for an event.

        Returns the init duration in seconds; raises `InitError` if init fails.
        """
        if self.alive:
            return 0.0
        self._api.reset()
        started = time.monotonic()
        self._process = subprocess.Popen(
            [self._python, "-m", "awslambdaric", self.handler],
            cwd=self._cwd,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.inits += 1
        self.frozen = False
        limit = started + self.init_timeout
        ready = self._api.snapshot_ready if self.snapstart else self._api.waiting
        while not ready.is_set():
            if self._api.init_failed.is_set() or self._process.poll() is not None:
                self._reap()
                raise InitError(f"init failed: {self._api.init_error or self.output()[-2000:]}")
            if time.monotonic() > limit:
                self.kill()
                raise InitError(f"init did not finish within {self.init_timeout} s")
            time.sleep(_POLL)
        self._fresh = True
        if self.snapstart:
            # Lambda snapshots the initialised environment here; stopping the process
            # stands for the snapshot, and `restore()` for a restore from it.
            self._process.send_signal(signal.SIGSTOP)
            _wait_stopped(self._process.pid, self.init_timeout)
            self.snapshotted = True
        return time.monotonic() - started

    def restore(self) -> None:
        """SnapStart: resume from the snapshot (the after-restore hooks run now)."""
        if not self.snapshotted or self._process is None:
            return
        self._process.send_signal(signal.SIGCONT)
        self.snapshotted = False
        self._api.restore()
        if not self._api.waiting.wait(self.init_timeout):
            raise InitError("the runtime did not ask for an event after its restore")

    def _environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "PYTEST_", "SERVERLESS_POOL_"))
        }
        python_path = [str(self._cwd), env.get("PYTHONPATH", "")]
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": self._api.address,
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"emulator/{uuid.uuid4().hex}",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start" if self.snapstart else "on-demand",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EXECUTION_ENV": _execution_env(),
                "LAMBDA_TASK_ROOT": str(self._cwd),
                "_HANDLER": self.handler,
                "PYTHONPATH": os.pathsep.join(filter(None, python_path)),
                "PYTHONUNBUFFERED": "1",
                "TZ": ":UTC",
            }
        )
        env.update(self._env)
        return env

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return Path(self._log.name).read_text(errors="replace")

    # -- invocations ---------------------------------------------------------------------

    def invoke(self, event: Any, *, timeout: float | None = None) -> InvocationResult:
        """Deliver one event and wait for its outcome (thawing and re-initing as needed)."""
        if not self.alive:
            self.start()
        if self.snapshotted:
            self.restore()
        if self.frozen:
            self.thaw()
        cold, self._fresh = self._fresh, False
        limit = self.timeout if timeout is None else timeout
        invocation = Invocation(
            request_id=str(uuid.uuid4()),
            payload=json.dumps(event).encode(),
            deadline_ms=deadline_ms(limit),
            function_arn=self.function_arn,
            trace_id=f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        )
        started = time.monotonic()
        self._api.submit(invocation)
        try:
            return self._await(invocation, started, started + limit, cold)
        finally:
            self._api.forget(invocation)

    def _await(
        self, invocation: Invocation, started: float, limit: float, cold: bool
    ) -> InvocationResult:
        process = self._process
        assert process is not None
        status: Status
        while not invocation.done.wait(_POLL):
            if process.poll() is not None:
                status, payload = "crash", {"errorType": "Runtime.ExitError"}
                self._reap()
                break
            if time.monotonic() >= limit:
                # Lambda ends the whole environment at the timeout; the next event inits.
                self.kill()
                status, payload = "timeout", {"errorType": "Sandbox.Timedout"}
                break
        else:
            if invocation.error is not None:
                status, payload = "error", invocation.error
            else:
                status, payload = "ok", json.loads(invocation.response or b"null")
        return InvocationResult(
            invocation.request_id, status, payload, time.monotonic() - started, cold
        )

    # -- freeze, thaw, shutdown --------------------------------------------------------

    def freeze(self, wait: float = 5.0) -> None:
        """SIGSTOP the process once it is waiting for its next event, as Lambda does."""
        if not self.alive or self.frozen:
            return
        if not self._api.waiting.wait(wait):
            raise RuntimeError("the instance did not ask for its next event in time")
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self.frozen = True
        _wait_stopped(self._process.pid, wait)

    def thaw(self) -> None:
        if self._process is not None and self.frozen:
            self._process.send_signal(signal.SIGCONT)
        self.frozen = False

    def shutdown(self, grace: float = 0.5) -> ShutdownResult:
        """SIGTERM (after a thaw), then SIGKILL if still running after `grace` seconds.

        Lambda gives an instance with an extension 300 ms (500 ms for internal ones).
        """
        process = self._process
        if process is None or process.poll() is not None:
            return ShutdownResult(True, 0.0, None if process is None else process.returncode)
        if self.snapshotted:
            self._process_continue()
        if self.frozen:
            self.thaw()
            # Lambda thaws, tells the extensions, then signals the runtime: a signal
            # sent together with SIGCONT can land on the polling thread and wait there.
            time.sleep(_THAW_SETTLE)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
            graceful = True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            graceful = False
        return ShutdownResult(graceful, time.monotonic() - started, process.returncode)

    def kill(self) -> None:
        """SIGKILL, as Lambda does at a timeout or when it reclaims a frozen instance."""
        process = self._process
        if process is not None and process.poll() is None:
            if self.frozen or self.snapshotted:
                process.send_signal(signal.SIGCONT)
            process.kill()
        self._reap()

    def _process_continue(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
        self.snapshotted = False

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self.frozen = False
        self.snapshotted = False

    def close(self, grace: float = 0.5) -> None:
        """Shut the process down and stop the Runtime API."""
        try:
            self.shutdown(grace)
        finally:
            self._api.stop()
            self._log.close()

    def __enter__(self) -> LambdaInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _execution_env() -> str:
    """The runtime's name, as Lambda sets it.

    From Python 3.12 the AWS runtimes wait for the next event on a thread, so signal
    handlers (SIGTERM) run while an instance is idle; `awslambdaric` turns that on from
    this variable only. On an older interpreter we claim 3.12 to get the same
    behaviour: the blocking wait in the main thread would otherwise hold SIGTERM
    handlers back until the next event, which never comes at shutdown.
    """
    version = max(sys.version_info[:2], (3, 12))
    return "AWS_Lambda_python{}.{}".format(*version)


def _wait_stopped(pid: int, timeout: float) -> None:
    """Wait (bounded) until the kernel shows `pid` stopped; SIGSTOP is asynchronous."""
    stat = Path(f"/proc/{pid}/stat")
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # no procfs (not Linux), or the process is gone
        if state in ("T", "t"):
            return
        time.sleep(0.001)
