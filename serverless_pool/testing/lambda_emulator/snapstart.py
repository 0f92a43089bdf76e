"""Lambda SnapStart: one initialised environment, and many instances restored from it.

``snapshot = Snapshot(handler, ...)``; ``snapshot.take()`` runs init once in a template
process, with the real ``awslambdaric`` and its SnapStart path: the before-snapshot
hooks registered with ``snapshot_restore_py`` run, and the runtime asks for its
restore. ``snapshot.restore()`` then returns a started `LambdaInstance` restored from
it: the after-restore hooks have run and it waits for its first event. Every restored
instance starts from the same memory, as on Lambda.

The snapshot is a fork of the template process, not a CRIU image of a microVM (CRIU is
not available here): what the fork copies (memory, file descriptors, the state of
every library) is what a snapshot copies, and what it does not copy (other threads)
a restored microVM would have. A thread blocked in the template, such as an internal
extension's ``next`` call, is absent from the copies; extension registrations are
carried over to every restored instance, as they are part of the snapshot on Lambda.
See `serverless_pool.testing.lambda_emulator.snapshot_runtime` for the template side.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from . import processes
from .instance import InitError, LambdaInstance
from .processes import ForkedProcess
from .runtime_api import Extension
from .snapshot_runtime import CONTROL_FD_ENV

__all__ = ["Snapshot"]

_RUNNER = Path(__file__).with_name("snapshot_runtime.py")
_LAUNCH = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


class Snapshot:
    """A SnapStart snapshot of `handler`, and the instances restored from it.

    Takes the same keyword arguments as `LambdaInstance` (except `max_concurrency`:
    Managed Instances do not use SnapStart).
    """

    def __init__(self, handler: str, *, name: str = "snapshot", **options: Any) -> None:
        if options.get("max_concurrency") is not None:
            raise ValueError("SnapStart does not apply to Lambda Managed Instances")
        self.handler = handler
        self._options = options
        self._template = LambdaInstance(handler, name=name, **options)
        self._template._snapstart = True
        self._control: socket.socket | None = None
        self._forked: queue.Queue[int] = queue.Queue()
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.instances: list[LambdaInstance] = []
        #: Seconds the init phase took (once taken).
        self.init_seconds: float | None = None

    @property
    def taken(self) -> bool:
        return self._control is not None

    @property
    def extensions(self) -> list[Extension]:
        """The extensions registered during init: every restored instance has them."""
        return self._template.extensions

    def output(self) -> str:
        """What init printed (the before-snapshot hooks included)."""
        return self._template.output()

    def take(self) -> float:
        """Run init and the before-snapshot hooks; returns the init duration in seconds."""
        with self._lock:
            if self._control is not None:
                return 0.0
            template = self._template
            started = time.monotonic()
            template._new_api()
            ours, theirs = socket.socketpair()
            try:
                template._start_extensions(started)
                template._start_runtime(
                    argv=["-c", _LAUNCH, str(_RUNNER), self.handler],
                    extra_env={CONTROL_FD_ENV: str(theirs.fileno())},
                    pass_fds=(theirs.fileno(),),
                )
                theirs.close()
                self._await_snapshot_point(template, ours, started)
            except BaseException:
                ours.close()
                theirs.close()
                template._destroy(vanish=False)
                raise
            self._control = ours
            self._reader = threading.Thread(target=self._listen, args=(ours,), daemon=True)
            self._reader.start()
            self.init_seconds = time.monotonic() - started
            return self.init_seconds

    def _await_snapshot_point(
        self, template: LambdaInstance, control: socket.socket, started: float
    ) -> None:
        api, process = template.api, template._process
        assert api is not None
        assert process is not None
        limit = started + template.init_timeout
        got = b""
        while not got.endswith(b"ready\n"):
            readable, _, _ = select.select([control], [], [], 0.01)
            if readable:
                chunk = control.recv(64)
                if not chunk:
                    break
                got += chunk
            if api.init_failed.is_set() or process.poll() is not None:
                template._drain_output(process)
                raise InitError(f"init failed: {api.init_error or template.output()[-2000:]}")
            if time.monotonic() > limit:
                raise InitError(f"init did not finish within {template.init_timeout} s")
        # The runtime asked for its restore: registration is over; every extension
        # must have finished its own init before Lambda takes the snapshot.
        api.close_registration()
        while not api.extensions_ready():
            if time.monotonic() > limit:
                late = [e.name for e in api.extensions if not e.ready]
                raise InitError(f"extensions {late} never called next before the snapshot")
            time.sleep(0.005)

    def _listen(self, control: socket.socket) -> None:
        pending = b""
        while True:
            try:
                chunk = control.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                kind, *args = line.decode().split()
                if kind == "forked":
                    self._forked.put(int(args[0]))
                elif kind == "exited":
                    pid, code = int(args[0]), int(args[1])
                    child = self._children.get(pid)
                    if child is None:
                        self._early_exits[pid] = code
                    else:
                        child.ended(code)

    def restore(self, name: str | None = None) -> LambdaInstance:
        """A new instance restored from this snapshot (taken first if need be)."""
        if not self.taken:
            self.take()
        options = dict(self._options)
        options.setdefault("on_output", self._template.on_output)
        instance = LambdaInstance(self.handler, name=name, **options)
        instance._snapshot = self
        instance._snapstart = True
        self.instances.append(instance)
        instance.start()
        return instance

    def _fork(self, instance: LambdaInstance, address: str) -> ForkedProcess:
        """Called by a restoring instance: fork the template; the child talks to `address`."""
        if self._control is None:
            raise RuntimeError("the snapshot has not been taken")
        with self._lock:
            read_end, write_end = os.pipe()
            try:
                socket.send_fds(self._control, [f"fork {address}\n".encode()], [write_end])
            finally:
                os.close(write_end)
            try:
                pid = self._forked.get(timeout=instance.init_timeout)
            except queue.Empty:
                os.close(read_end)
                raise InitError("the snapshot's template did not fork") from None
            child = ForkedProcess(pid)
            self._children[pid] = child
            if pid in self._early_exits:
                child.ended(self._early_exits.pop(pid))
        instance._read_output(os.fdopen(read_end, "rb"), pid)
        return child

    def close(self) -> None:
        """Close every restored instance, then the template."""
        for instance in self.instances:
            instance.close()
        self.instances = []
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(OSError):
                control.sendall(b"quit\n")
            control.close()
        process = self._template._process
        if process is not None and process.poll() is None:
            processes.signal_group(process.pid, signal.SIGKILL)
        self._template.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
