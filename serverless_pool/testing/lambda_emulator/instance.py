"""One emulated Lambda execution environment: a real ``python -m awslambdaric`` process.

The contract followed is AWS's (the Lambda developer guide, the Extensions API
reference and AWS's own runtime interface emulator), not ours:

- **Init**: external extensions (executables given in `extensions`) start first and
  register; then the runtime starts; init is done when the runtime asked for its first
  event and every registered extension called ``next``. A failure or a timeout raises
  `InitError`.
- **Invoke**: the event goes out with the ``Lambda-Runtime-*`` headers; the invocation
  is over when the runtime answered and every extension subscribed to ``INVOKE`` called
  ``next`` again. At the function timeout Lambda resets the environment (the shutdown
  below, with reason ``timeout``); the next event re-inits it. A crash does the same.
- **Freeze**: between invocations the whole environment is stopped with SIGSTOP, so
  its threads and timers stop too; `thaw()` is SIGCONT.
- **Shutdown**: with no extension registered there is no SIGTERM at all: the
  environment is destroyed as it is. With extensions, the runtime gets SIGTERM and
  500 ms (internal extensions only) or 300 ms (500 ms if there is an internal one too,
  out of a 2,000 ms phase) when external extensions are registered; external
  extensions subscribed to it then get a ``SHUTDOWN`` event; whatever is still
  running at the end of its budget is killed.
- **Lambda Managed Instances** (`max_concurrency`): ``AWS_LAMBDA_MAX_CONCURRENCY`` and
  ``AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances`` are set, so the real
  ``awslambdaric`` forks that many workers, each running the module's init and taking
  events concurrently; init is done when one worker asks for an event. `invoke()` may
  be called from several threads; beyond `max_concurrency` events in flight it returns
  ``throttled`` (Lambda rejects them). Environments are never frozen, the function
  timeout is reported but not enforced (the worker runs on), a crashed worker leaves
  the others serving, and shutdown signals the whole process group (the runtime's
  budget there is 600 ms of 2,000 ms, as in AWS's emulator).

**Destroyed means gone, not closed.** When Lambda kills an environment it disappears
without a word: its TCP connections are neither closed nor answered, and the database
keeps the sessions until its own timeout ends them. Killing a local process would make
the kernel close its sockets, which Lambda never does, so a killed environment is
instead stopped for good (SIGSTOP) and only reaped by `close()`. ``vanish=False``
kills it outright instead.

Each instance reports, per invocation, the database connections it opened: TCP
connections the environment's processes hold at the end of the invocation that they
did not hold at its start, seen in ``/proc`` (a connection opened and closed within the
invocation is not counted).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from . import processes
from .processes import Process
from .runtime_api import Extension, Invocation, RuntimeApi, deadline_ms

if TYPE_CHECKING:
    from .snapstart import Snapshot

__all__ = [
    "InitError",
    "InvocationResult",
    "LambdaInstance",
    "OutputCallback",
    "ShutdownResult",
    "Status",
]

_POLL = 0.005
_THAW_SETTLE = 0.02
#: Shutdown budgets, from the Extensions API reference (on-demand) and AWS's runtime
#: interface emulator for Managed Instances: (runtime's share, whole phase).
_INTERNAL_ONLY = (0.5, 0.5)
_WITH_EXTERNAL = (0.3, 2.0)
_WITH_BOTH = (0.5, 2.0)
_MANAGED = (0.6, 2.0)

Status = Literal["ok", "error", "timeout", "crash", "throttled"]
#: Called with (instance name, one line of output) for everything the environment prints.
OutputCallback = Callable[[str, str], None]

_names = itertools.count(1)


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
    #: The environment that served it (its `LambdaInstance.name`).
    instance: str = ""
    #: Database connections the environment opened during the invocation (see above).
    connections_opened: int = 0
    #: Managed Instances: the pid of the worker process that served it.
    worker: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ShutdownResult:
    """How an environment ended.

    `sigterm`: whether Lambda sent the runtime SIGTERM at all (only when an extension
    is registered). `graceful`: the runtime exited by itself within its `budget`.
    `seconds`: from SIGTERM to the runtime's exit (or to the kill). `started`: the
    `time.monotonic()` at which the shutdown began.
    """

    sigterm: bool
    graceful: bool
    seconds: float
    returncode: int | None
    budget: float = 0.0
    reason: str = "spindown"
    started: float = 0.0


class LambdaInstance:
    """An execution environment running `handler` (``module.function``).

    :param env: extra environment variables for the function (e.g. the database URL).
    :param cwd: the function's code directory (``LAMBDA_TASK_ROOT``), on ``PYTHONPATH``.
    :param timeout: the function timeout, in seconds (the deadline of each invocation).
    :param init_timeout: how long init may take (Lambda allows 10 s).
    :param extensions: executables started as external extensions (what a layer puts
        in ``/opt/extensions``); each registers under its file name.
    :param max_concurrency: run as a Lambda Managed Instances environment with this many
        runtime workers.
    :param on_output: called with each line the environment prints.
    :param vanish: a killed environment stays stopped until `close()`, so that the
        database sees its connections neither close nor answer (see the module doc).
    :param count_connections: count the connections each invocation opened (see the
        module doc); False skips reading ``/proc/net/tcp`` twice per invocation, which
        costs milliseconds of CPU on a machine with many sockets (the fleet simulation
        counts connections itself), and reports 0.
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
        python: str = sys.executable,
        extensions: Sequence[str | os.PathLike[str]] = (),
        max_concurrency: int | None = None,
        name: str | None = None,
        on_output: OutputCallback | None = None,
        vanish: bool = True,
        count_connections: bool = True,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency: expected at least 1, got {max_concurrency!r}")
        self.handler = handler
        self.name = name or f"i{next(_names)}"
        self.function_name = function_name
        self.function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.timeout = timeout
        self.init_timeout = init_timeout
        self.memory_mb = memory_mb
        self.max_concurrency = max_concurrency
        self.vanish = vanish
        self.count_connections = count_connections
        self.on_output = on_output
        self._env = dict(env or {})
        self._cwd = Path(cwd) if cwd is not None else Path.cwd()
        self._python = python
        self._extension_paths = [Path(p) for p in extensions]
        self._api: RuntimeApi | None = None
        self._process: Process | None = None
        self._extension_procs: list[subprocess.Popen[bytes]] = []
        self._husks: list[Process] = []
        self._output: list[str] = []
        self._output_lock = threading.Lock()
        self._readers: dict[int, threading.Thread] = {}
        self._invoke_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._state = threading.Condition()
        self._in_flight: list[Invocation] = []
        self._lingering: list[Invocation] = []
        self._workers_seen: set[int] = set()
        self._snapshot: Snapshot | None = None
        self._snapstart = False
        self.frozen = False
        self.inits = 0
        self._fresh = False
        self.closed = False

    # -- what it is ----------------------------------------------------------------------

    @property
    def managed(self) -> bool:
        """Whether this is a Lambda Managed Instances environment."""
        return self.max_concurrency is not None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def api(self) -> RuntimeApi | None:
        """The current process's Runtime/Extensions API (None before init)."""
        return self._api

    @property
    def extensions(self) -> list[Extension]:
        """The extensions registered in the current process's environment."""
        return [] if self._api is None else self._api.extensions

    def workers(self) -> list[int]:
        """Managed Instances: the pids of the runtime's worker processes."""
        return processes.children(self.pid) if self.pid is not None else []

    def output(self) -> str:
        """Everything the environment printed so far (runtime and extensions)."""
        with self._output_lock:
            return "".join(self._output)

    # -- init --------------------------------------------------------------------------

    def start(self) -> float:
        """Init: start the environment and wait until it is ready for an event.

        Returns the init duration in seconds; raises `InitError` if init fails.
        """
        with self._start_lock:
            if self.alive:
                return 0.0
            if self.closed:
                raise RuntimeError(f"the instance {self.name!r} is closed")
            started = time.monotonic()
            self._in_flight = []
            self._lingering = []
            self._workers_seen = set()
            self._new_api()
            assert self._api is not None
            try:
                if self._snapshot is not None:
                    self._restore_runtime(started)
                else:
                    self._start_extensions(started)
                    self._start_runtime()
                    self.inits += 1
                    self._await_ready(started)
            except BaseException:
                self._destroy(vanish=False)
                raise
            self.frozen = False
            self._fresh = True
            return time.monotonic() - started

    def wait_workers(self, count: int, timeout: float = 30.0) -> bool:
        """Managed Instances: wait until `count` workers are asking for events."""
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if self._api is not None and self._api.waiting >= count:
                return True
            time.sleep(0.01)
        return False

    def _new_api(self) -> None:
        if self._api is not None:
            self._api.stop()
        worker_of = self._worker_of if self.managed else None
        self._api = RuntimeApi(
            function_name=self.function_name,
            handler=self.handler,
            external_names=[p.name for p in self._extension_paths],
            worker_of=worker_of,
        ).start()

    def _worker_of(self, peer_port: int) -> int | None:
        if self.pid is None or self._api is None:
            return None
        return processes.owner_of_connection(peer_port, self._api.port, self.workers())

    def _environment(self, *, runtime: bool) -> dict[str, str]:
        assert self._api is not None
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "PYTEST_", "SERVERLESS_POOL_", "_"))
        }
        python_path = [str(self._cwd), env.get("PYTHONPATH", "")]
        if self.managed:
            kind = "lambda-managed-instances"
        elif self._snapstart:
            kind = "snap-start"
        else:
            kind = "on-demand"
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": self._api.address,
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_INITIALIZATION_TYPE": kind,
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "PYTHONPATH": os.pathsep.join(filter(None, python_path)),
                "PYTHONUNBUFFERED": "1",
                "TZ": ":UTC",
            }
        )
        if runtime:
            env.update(
                {
                    "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                    "AWS_LAMBDA_LOG_STREAM_NAME": f"emulator/{uuid.uuid4().hex}",
                    "AWS_EXECUTION_ENV": _execution_env(),
                    "LAMBDA_TASK_ROOT": str(self._cwd),
                    "_HANDLER": self.handler,
                }
            )
            if self.managed:
                env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        env.update(self._env)
        return env

    def _start_extensions(self, started: float) -> None:
        assert self._api is not None
        env = self._environment(runtime=False)
        for path in self._extension_paths:
            process = subprocess.Popen(
                [str(path)],
                cwd=self._cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._extension_procs.append(process)
            self._read_output(process.stdout, process.pid)
        # Lambda starts the runtime once every external extension has registered.
        limit = started + self.init_timeout
        names = {p.name for p in self._extension_paths}
        while names - {e.name for e in self._api.extensions}:
            if any(p.poll() is not None for p in self._extension_procs):
                raise InitError(f"an extension exited during init: {self.output()[-2000:]}")
            if time.monotonic() > limit:
                raise InitError(f"extensions did not register within {self.init_timeout} s")
            time.sleep(_POLL)

    def _start_runtime(
        self,
        argv: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        process = subprocess.Popen(
            [self._python, *(argv or ["-m", "awslambdaric", self.handler])],
            cwd=self._cwd,
            env={**self._environment(runtime=True), **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        self._process = process
        self._read_output(process.stdout, process.pid)

    def _await_ready(self, started: float) -> None:
        """Init is over when the runtime waits for an event and every extension is ready."""
        api, process = self._api, self._process
        assert api is not None
        assert process is not None
        limit = started + self.init_timeout
        while not (api.waiting and api.extensions_ready()):
            if api.init_failed.is_set() or process.poll() is not None:
                self._drain_output(process)
                detail = api.init_error or self.output()[-2000:]
                raise InitError(f"init failed: {detail}")
            if time.monotonic() > limit:
                late = [e.name for e in api.extensions if not e.ready]
                why = f"extensions {late} never called next" if late else "the runtime"
                raise InitError(f"init did not finish within {self.init_timeout} s ({why})")
            time.sleep(_POLL)
        api.close_registration()

    def _restore_runtime(self, started: float) -> None:
        assert self._snapshot is not None
        assert self._api is not None
        if not self._snapshot.taken:
            self._snapshot.take()
        api = self._api
        api.adopt_extensions(self._snapshot.extensions)
        self._process = self._snapshot._fork(self, api.address)
        self.inits += 1
        limit = started + self.init_timeout
        while not api.restore_requested.is_set():
            if self._process.poll() is not None or time.monotonic() > limit:
                raise InitError(
                    f"the restored runtime did not ask for its restore: {self.output()}"
                )
            time.sleep(_POLL)
        api.restore()  # the after-restore hooks run now
        while not api.waiting:
            if api.restore_error is not None or self._process.poll() is not None:
                raise InitError(f"restore failed: {api.restore_error or self.output()[-2000:]}")
            if time.monotonic() > limit:
                raise InitError(f"restore did not finish within {self.init_timeout} s")
            time.sleep(_POLL)

    # -- output ------------------------------------------------------------------------

    def _read_output(self, stream: IO[bytes] | None, pid: int) -> None:
        if stream is None:
            return
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        thread.start()
        self._readers[pid] = thread

    def _pump(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                with self._output_lock:
                    self._output.append(line)
                if self.on_output is not None:
                    # A broken callback must not stop the pump (the process would block).
                    with contextlib.suppress(Exception):
                        self.on_output(self.name, line)

    def _drain_output(self, process: Process, wait: float = 2.0) -> None:
        """After a process ended, give its output pump time to read the last lines."""
        reader = self._readers.pop(process.pid, None)
        if reader is not None:
            reader.join(wait)

    # -- invocations -------------------------------------------------------------------

    def invoke(self, event: Any, *, timeout: float | None = None) -> InvocationResult:
        """Deliver one event and wait for its outcome (thawing and re-initing as needed).

        On-demand environments serve one event at a time (concurrent callers queue);
        Managed Instances environments serve up to `max_concurrency` at once.
        """
        if self.managed:
            return self._invoke_managed(event, timeout)
        with self._invoke_lock:
            if not self.alive:
                self.start()
            if self.frozen:
                self.thaw()
            cold, self._fresh = self._fresh, False
            limit = self.timeout if timeout is None else timeout
            invocation = self._new_invocation(event, limit)
            with self._state:
                self._in_flight.append(invocation)
            return self._run(invocation, limit, cold)

    def _invoke_managed(self, event: Any, timeout: float | None) -> InvocationResult:
        if not self.alive:
            self.start()
        api = self._api
        limit = self.timeout if timeout is None else timeout
        with self._state:
            # Invocations that timed out stay in flight until their worker answers.
            for finished in [i for i in self._lingering if i.done.is_set()]:
                self._lingering.remove(finished)
                self._in_flight.remove(finished)
                if api is not None:
                    api.forget(finished)
            if len(self._in_flight) >= (self.max_concurrency or 1):
                return InvocationResult(
                    "", "throttled", {"errorType": "ConcurrentInvocationLimitExceeded"},
                    0.0, False, self.name,
                )  # fmt: skip
            invocation = self._new_invocation(event, limit)
            self._in_flight.append(invocation)
        return self._run(invocation, limit, cold=False)

    def _new_invocation(self, event: Any, limit: float) -> Invocation:
        return Invocation(
            request_id=str(uuid.uuid4()),
            payload=json.dumps(event).encode(),
            deadline_ms=deadline_ms(limit),
            function_arn=self.function_arn,
            trace_id=f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        )

    def _held(self, pids: Iterable[int]) -> set[int]:
        assert self._api is not None
        if not self.count_connections:
            return set()
        return processes.tcp_connections(list(pids), self._api.port)

    def _run(self, invocation: Invocation, limit: float, cold: bool) -> InvocationResult:
        api, process = self._api, self._process
        assert api is not None
        assert process is not None
        env_pids = [process.pid, *processes.children(process.pid)]
        before = self._held(env_pids)
        started = time.monotonic()
        api.submit(invocation)
        status: Status = "ok"
        payload: Any = None
        try:
            while not api.invocation_complete(invocation):
                invocation.done.wait(_POLL)
                if process.poll() is not None:
                    status, payload = "crash", {"errorType": "Runtime.ExitError"}
                    if not self.managed:
                        self._reset("failure")
                    break
                worker = invocation.worker
                if self.managed and worker is not None and not _running(worker):
                    status, payload = "crash", {"errorType": "Runtime.ExitError"}
                    break
                if time.monotonic() >= started + limit:
                    status, payload = "timeout", {"errorType": "Sandbox.Timedout"}
                    if not self.managed:
                        # Lambda resets the whole environment; the next event inits.
                        self._reset("timeout")
                    break
            else:
                if invocation.error is not None:
                    status, payload = "error", invocation.error
                else:
                    payload = json.loads(invocation.response or b"null")
        finally:
            with self._state:
                if self.managed and status == "timeout":
                    self._lingering.append(invocation)
                else:
                    api.forget(invocation)
                    self._in_flight.remove(invocation)
        seconds = time.monotonic() - started
        worker = invocation.worker
        if self.managed and worker is not None:
            with self._state:
                cold = worker not in self._workers_seen
                self._workers_seen.add(worker)
            opened = len(self._held([worker]) - before) if status != "crash" else 0
        else:
            opened = len(self._held(env_pids) - before) if self.alive else 0
        return InvocationResult(
            invocation.request_id, status, payload, seconds, cold, self.name, opened, worker
        )

    # -- freeze, thaw ------------------------------------------------------------------

    def _groups(self) -> list[int]:
        procs: list[Process] = [*self._extension_procs]
        if self._process is not None:
            procs.append(self._process)
        return [p.pid for p in procs if p.poll() is None]

    def freeze(self, wait: float = 5.0) -> None:
        """SIGSTOP the environment once it waits for its next event, as Lambda does."""
        if self.managed:
            raise RuntimeError("Lambda Managed Instances environments are never frozen")
        if not self.alive or self.frozen:
            return
        api = self._api
        assert api is not None
        assert self._process is not None
        limit = time.monotonic() + wait
        while not (api.waiting and api.settled()):
            if time.monotonic() > limit:
                raise RuntimeError("the instance did not ask for its next event in time")
            time.sleep(0.001)
        for group in self._groups():
            processes.signal_group(group, signal.SIGSTOP)
        self.frozen = True
        processes.wait_stopped(self._process.pid, wait)

    def thaw(self) -> None:
        if self.frozen:
            for group in self._groups():
                processes.signal_group(group, signal.SIGCONT)
        self.frozen = False

    # -- shutdown ----------------------------------------------------------------------

    def shutdown(self, reason: str = "spindown") -> ShutdownResult:
        """End the environment the way Lambda does (see the module doc)."""
        with self._invoke_lock:
            return self._end(reason)

    def _reset(self, reason: str) -> ShutdownResult:
        return self._end(reason)

    def _end(self, reason: str) -> ShutdownResult:
        process, api = self._process, self._api
        began = time.monotonic()
        if process is None or api is None:
            return ShutdownResult(False, True, 0.0, None, reason=reason, started=began)
        if process.poll() is not None:
            self._drain_output(process)
            self._destroy(vanish=False)
            return ShutdownResult(False, True, 0.0, process.returncode, reason=reason)
        if self.frozen:
            self.thaw()
            # Lambda thaws, tells the extensions, then signals the runtime: a signal
            # sent together with SIGCONT can land on a thread that is not running yet.
            time.sleep(_THAW_SETTLE)
        registered = api.extensions
        if not registered:
            # No extension: no SIGTERM, no goodbye; the environment just stops existing.
            self._destroy(vanish=self.vanish)
            return ShutdownResult(False, False, 0.0, None, 0.0, reason, began)
        external = [e for e in registered if e.external]
        internal = [e for e in registered if not e.external]
        if self.managed:
            runtime_budget, phase = _MANAGED
        elif external and internal:
            runtime_budget, phase = _WITH_BOTH
        elif external:
            runtime_budget, phase = _WITH_EXTERNAL
        else:
            runtime_budget, phase = _INTERNAL_ONLY
        workers = self.workers() if self.managed else []
        began = time.monotonic()
        processes.signal_group(process.pid, signal.SIGTERM)
        graceful = _wait_all(process, workers, began + runtime_budget)
        seconds = time.monotonic() - began
        if not graceful:
            self._vanish_or_kill(process)
        if external:
            api.send_shutdown(reason, time.time() + phase - seconds)
            for proc in self._extension_procs:
                try:
                    proc.wait(max(0.0, began + phase - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._vanish_or_kill(proc)
        if graceful:
            self._drain_output(process)
        returncode = process.poll()
        self._destroy(vanish=self.vanish)
        return ShutdownResult(True, graceful, seconds, returncode, runtime_budget, reason, began)

    def _vanish_or_kill(self, process: Process) -> None:
        if self.vanish:
            processes.signal_group(process.pid, signal.SIGSTOP)
            self._husks.append(process)
        else:
            processes.signal_group(process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Destroy the environment with no signal at all, as Lambda does when it
        reclaims a frozen instance or ends one that has no extension."""
        with self._state:
            self._destroy(vanish=self.vanish)

    def _destroy(self, *, vanish: bool) -> None:
        procs: list[Process] = [*self._extension_procs]
        if self._process is not None:
            procs.append(self._process)
        for proc in procs:
            if proc.poll() is not None:
                continue
            if vanish:
                processes.signal_group(proc.pid, signal.SIGSTOP)
                self._husks.append(proc)
            else:
                processes.signal_group(proc.pid, signal.SIGKILL)
                processes.signal_group(proc.pid, signal.SIGCONT)
        if not vanish:
            for proc in procs:
                _reap(proc)
        self._extension_procs = []
        self.frozen = False
        if self._api is not None:
            self._api.stop()
            self._api = None
        self._process = None

    def close(self) -> None:
        """Shut the environment down (as Lambda would) and reap what is left of it."""
        if self.closed:
            return
        try:
            if self.alive:
                self.shutdown()
        finally:
            self.closed = True
            self._destroy(vanish=False)
            for husk in self._husks:
                processes.signal_group(husk.pid, signal.SIGKILL)
                processes.signal_group(husk.pid, signal.SIGCONT)
                _reap(husk)
            self._husks = []

    def __enter__(self) -> LambdaInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reap(process: Process) -> None:
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def _wait_all(process: Process, others: list[int], limit: float) -> bool:
    """Wait until `process` and the `others` (not our children) have exited."""
    try:
        process.wait(max(0.0, limit - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    while any(_running(pid) for pid in others):
        if time.monotonic() >= limit:
            return False
        time.sleep(0.001)
    return True


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


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
