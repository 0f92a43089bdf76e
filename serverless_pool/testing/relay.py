"""A TCP relay between a client and a server, that a test can turn into a bad network.

It listens on a free port on 127.0.0.1 and forwards each connection to its current
target. A test can point it at another server (as DNS follows a failover), make it go
silent (it stops reading, so the kernel still acknowledges what the client sends and no
TCP timeout fires: a frozen proxy), and cut a connection the moment the client sends a
given message (a connection lost mid-COMMIT).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .postgres import LoopbackEndpoint

__all__ = ["Relay", "RelayedConnection"]

_CHUNK = 65536
_TICK = 0.02


@dataclass
class RelayedConnection:
    """One client connection through the relay."""

    target: tuple[str, int]
    client: socket.socket
    server: socket.socket | None = None
    #: bytes sent by the client so far
    sent: bytearray = field(default_factory=bytearray)
    closed: bool = False


class Relay(LoopbackEndpoint):
    """Forward 127.0.0.1:`port` to `target`; use as a context manager."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.host = "127.0.0.1"
        self.target = target
        self.connections: list[RelayedConnection] = []
        self._silent = threading.Event()
        self._stop = threading.Event()
        self._cut: tuple[bytes, bool] | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server((self.host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Relay:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._spawn(self._accept_loop)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            self._close(conn)
        for thread in self._threads:
            thread.join(timeout=5)

    # -- what a test does ------------------------------------------------------------

    def point_at(self, target: tuple[str, int]) -> None:
        """New connections go to `target` (existing ones stay where they are)."""
        self.target = target

    def go_silent(self) -> None:
        """Stop forwarding, both ways, on every connection (new ones are accepted)."""
        self._silent.set()

    def resume(self) -> None:
        self._silent.clear()

    def cut_when_client_sends(self, marker: bytes, *, forward: bool) -> None:
        """Close the client's connection as soon as it sends a chunk containing `marker`,
        after forwarding that chunk to the server (`forward`) or not. Once."""
        self._cut = (marker, forward)

    def open_connections(self) -> list[RelayedConnection]:
        with self._lock:
            return [c for c in self.connections if not c.closed]

    # -- plumbing ----------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], _TICK)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            conn = RelayedConnection(self.target, client)
            with self._lock:
                self.connections.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: RelayedConnection) -> None:
        try:
            conn.server = socket.create_connection(conn.target, timeout=5)
        except OSError:
            self._close(conn)  # as a dead server looks through a proxy: closed at once
            return
        sockets = [conn.client, conn.server]
        while not self._stop.is_set() and not conn.closed:
            if self._silent.is_set():
                time.sleep(_TICK)
                continue
            try:
                ready, _, _ = select.select(sockets, [], [], _TICK)
            except (OSError, ValueError):
                break
            for sock in ready:
                if self._silent.is_set():
                    break
                try:
                    data = sock.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    self._close(conn)
                    return
                if sock is conn.client:
                    conn.sent += data
                    cut = self._cut
                    if cut is not None and cut[0] in data:
                        self._cut = None
                        if cut[1]:
                            conn.server.sendall(data)
                        self._close(conn, reset=True)
                        return
                    conn.server.sendall(data)
                else:
                    conn.client.sendall(data)
        self._close(conn)

    def _close(self, conn: RelayedConnection, *, reset: bool = False) -> None:
        conn.closed = True
        if reset:  # an RST, as a lost connection looks to the client
            with contextlib.suppress(OSError):
                conn.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for sock in (conn.client, conn.server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
