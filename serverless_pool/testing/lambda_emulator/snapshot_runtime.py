"""Runs inside a SnapStart template process, in place of ``python -m awslambdaric``.

Lambda SnapStart snapshots a microVM after init and restores many VMs from it. CRIU is
not available here, so a snapshot is modelled by forking the initialised process: the
real ``awslambdaric`` runs init (the function's module), then its SnapStart path runs
the before-snapshot hooks registered with ``snapshot_restore_py`` and calls the
Runtime API's ``restore/next``. That call is where the template stops: instead of
waiting for a restore, it serves fork requests from the emulator on a control socket.
Each forked child becomes an instance: its own process group, its own output pipe, its
own Runtime API address; it then makes the real ``restore/next`` call, and
``awslambdaric`` runs the after-restore hooks and its invocation loop, unchanged.

``awslambdaric``'s native client reads ``AWS_LAMBDA_RUNTIME_API`` once, when its shared
library is loaded; so that each child talks to its own API, the library is loaded in
the child, at its first use, instead of in the template (nothing uses it before the
restore). The emulator runs this file by its path, so that the template imports nothing
but the standard library and ``awslambdaric`` before the function's own init.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import select
import socket
import sys
import types
from typing import Any

CONTROL_FD_ENV = "_SERVERLESS_POOL_SNAPSHOT_CONTROL_FD"


class _DeferredNativeClient(types.ModuleType):
    """Stands in for ``runtime_client`` until a restored child loads the real one."""

    def __init__(self) -> None:
        super().__init__("runtime_client")
        self._real: types.ModuleType | None = None
        self._agent = ""

    def initialize_client(self, user_agent: str) -> None:
        self._agent = user_agent

    def load(self) -> None:
        spec = importlib.machinery.PathFinder.find_spec("runtime_client")
        if spec is None or spec.loader is None:
            raise ImportError("awslambdaric's runtime_client extension is not installed")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.initialize_client(self._agent)
        self._real = module

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._real is None:
            self.load()
        return getattr(self._real, name)


def _send(control: socket.socket, line: str) -> None:
    control.sendall(line.encode() + b"\n")


def _reap(control: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(control, f"exited {pid} {os.waitstatus_to_exitcode(status)}")


def _become_instance(
    control: socket.socket, output: int | None, address: str, client: Any, native: Any
) -> None:
    os.setpgid(0, 0)
    control.close()
    if output is not None:
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
    os.environ["AWS_LAMBDA_RUNTIME_API"] = address
    client.lambda_runtime_address = address
    native.load()


def _serve_forks(control: socket.socket, client: Any, restore_next: Any, native: Any) -> None:
    _send(control, "ready")
    children: set[int] = set()
    pending = b""
    fds: list[int] = []
    while True:
        _reap(control, children)
        readable, _, _ = select.select([control], [], [], 0.05)
        if not readable:
            continue
        data, received, _flags, _addr = socket.recv_fds(control, 4096, 4)
        if not data:
            os._exit(0)  # the emulator is gone
        pending += data
        fds.extend(received)
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command, *args = line.decode().split()
            if command == "quit":
                os._exit(0)
            if command != "fork":
                continue
            output = fds.pop(0) if fds else None
            pid = os.fork()
            if pid == 0:
                _become_instance(control, output, args[0], client, native)
                restore_next(client)  # the real call, to this instance's API
                return
            children.add(pid)
            if output is not None:
                os.close(output)
            _send(control, f"forked {pid}")


def main(argv: list[str]) -> None:
    control = socket.socket(fileno=int(os.environ.pop(CONTROL_FD_ENV)))
    native = _DeferredNativeClient()
    sys.modules["runtime_client"] = native
    from awslambdaric import __main__ as awslambdaric_main  # type: ignore[import-untyped]
    from awslambdaric import lambda_runtime_client  # type: ignore[import-untyped]

    client_class = lambda_runtime_client.BaseLambdaRuntimeClient
    real_restore_next = client_class.restore_next

    def restore_next(self: Any) -> None:
        _serve_forks(control, self, real_restore_next, native)

    client_class.restore_next = restore_next  # type: ignore[method-assign]
    awslambdaric_main.main(["awslambdaric", argv[-1]])


if __name__ == "__main__":
    main(sys.argv)
