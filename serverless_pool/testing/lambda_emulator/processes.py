"""The processes of an emulated execution environment, as the kernel sees them (Linux).

An environment's processes live in process groups of their own, so that a freeze, a
SIGTERM or a kill reaches every process of the environment (Lambda Managed Instances'
worker processes, anything the function started) and nothing else. ``/proc`` tells
whether a process is stopped, which processes it forked, and which TCP connections it
holds: the emulator counts the connections an invocation opened by looking at the
instance from the outside, whatever library the function uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

__all__ = [
    "ForkedProcess",
    "Process",
    "children",
    "is_stopped",
    "owner_of_connection",
    "signal_group",
    "tcp_connections",
    "wait_stopped",
]

_ESTABLISHED = "01"


class ForkedProcess:
    """A process forked by a snapshot's template: not our child, so its exit status
    comes from the template, which reaps it and reports it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def ended(self, returncode: int) -> None:
        """Called when the template reports the exit (as `subprocess` encodes it)."""
        self.returncode = returncode
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


#: A process the emulator can poll, wait for and signal (a `subprocess.Popen`, or a
#: `ForkedProcess` restored from a SnapStart snapshot).
Process = subprocess.Popen[bytes] | ForkedProcess


def signal_group(pid: int, signum: int) -> None:
    """Send `signum` to the process group led by `pid` (gone already: nothing to do)."""
    # PermissionError: the group is gone and its id was reused by someone else's.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _state(pid: int) -> str | None:
    return _state_of(Path(f"/proc/{pid}/stat"))


def _state_of(stat: Path) -> str | None:
    try:
        text = stat.read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


def is_stopped(pid: int) -> bool:
    """Whether the kernel shows `pid` stopped by a signal (SIGSTOP)."""
    return _state(pid) in ("T", "t")


def wait_stopped(pid: int, timeout: float) -> bool:
    """Wait (bounded) until every thread of `pid` is stopped; SIGSTOP is delivered
    asynchronously, to each thread in turn."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        state = _state(pid)
        if state is None or state in ("Z", "X"):
            return False
        if state in ("T", "t") and all(s in ("T", "t", None) for s in _thread_states(pid)):
            return True
        time.sleep(0.001)
    return False


def _thread_states(pid: int) -> list[str | None]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    return [_state_of(task / "stat") for task in tasks]


def children(pid: int) -> list[int]:
    """The processes `pid` forked (Managed Instances' runtime workers, for one)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(part) for part in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_table(pid: int) -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of every established TCP socket in the netns."""
    rows: list[tuple[int, int, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _ESTABLISHED:
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            rows.append((local, remote, int(fields[9])))
    return rows


def tcp_connections(pids: list[int], exclude_remote_port: int) -> set[int]:
    """Inodes of the established TCP connections `pids` hold, except those to
    `exclude_remote_port` (the Runtime API): in practice, database connections."""
    if not pids:
        return set()
    held: set[int] = set()
    for pid in pids:
        held |= _socket_inodes(pid)
    if not held:
        return set()
    return {
        inode
        for _local, remote, inode in _tcp_table(pids[0])
        if inode in held and remote != exclude_remote_port
    }


def owner_of_connection(peer_port: int, server_port: int, candidates: list[int]) -> int | None:
    """Which of `candidates` holds the client end (local port `peer_port`) of a
    connection to `server_port`: tells Managed Instances' workers apart, since they
    all talk to one Runtime API address."""
    if not candidates:
        return None
    inodes = {
        inode
        for local, remote, inode in _tcp_table(candidates[0])
        if local == peer_port and remote == server_port
    }
    if not inodes:
        return None
    for pid in candidates:
        if _socket_inodes(pid) & inodes:
            return pid
    return None
