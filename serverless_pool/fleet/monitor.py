"""What the server sees of the fleet: its sessions in ``pg_stat_activity``, sampled.

A thread of the simulation asks the server every few milliseconds, through a session
of its own, which sessions the fleet holds (they carry the run's
``application_name``; behind PgBouncer, its server connections carry the name of the
client they last served). Each sample records how many there are and how many belong
to an instance that is frozen right now. When a session an instance owns disappears,
the monitor notes how long after the instance's freeze (the server's idle timeout at
work) or after the instance's shutdown began (SIGTERM closing the pool, or, without an
extension, the idle timeout again) that happened.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

__all__ = ["ServerMonitor"]

_SESSIONS = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND application_name = %s"
)


class ServerMonitor:
    """Samples the fleet's sessions until `close()`.

    :param conninfo: where to look (any role that sees the fleet's sessions).
    :param app_name: the ``application_name`` of the fleet's sessions.
    :param frozen_since: for an instance's name, the `time.monotonic()` at which it was
        frozen, or None when it is not frozen.
    :param origin: the `time.monotonic()` that sample times count from.
    :param interval: seconds between two samples.
    """

    def __init__(
        self,
        conninfo: str,
        app_name: str,
        *,
        frozen_since: Callable[[str], float | None],
        origin: float,
        interval: float = 0.01,
    ) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True)
        # The simulation's server ends idle sessions quickly; this one must stay.
        self._conn.execute("SET idle_session_timeout = 0")
        self._app_name = app_name
        self._frozen_since = frozen_since
        self._interval = interval
        self._lock = threading.Lock()
        self._owners: dict[int, str] = {}
        self._current: set[int] = set()
        self._shutdown_started: dict[str, float] = {}
        self._watched: set[int] = set()
        self._stop = threading.Event()
        self._sampled = threading.Condition(self._lock)
        self.origin = origin
        #: (seconds since `origin`, sessions, sessions owned by frozen instances)
        self.samples: list[tuple[float, int, int]] = []
        #: seconds from an instance's freeze to the end of its session
        self.releases_after_freeze: list[float] = []
        #: seconds from the start of an instance's shutdown to the end of its session
        self.releases_after_shutdown: list[float] = []
        self._thread = threading.Thread(target=self._run, name="fleet-monitor", daemon=True)
        self._thread.start()

    def own(self, pid: int, instance: str) -> None:
        """Record that server session `pid` belongs to `instance`."""
        with self._lock:
            self._owners[pid] = instance

    def sessions_of(self, instances: Iterable[str]) -> dict[int, str]:
        """The sessions of `instances` seen in the latest sample, and their owners."""
        names = set(instances)
        with self._lock:
            return {
                pid: owner
                for pid in self._current
                if (owner := self._owners.get(pid)) is not None and owner in names
            }

    def watch_shutdown(self, pids: Iterable[int]) -> None:
        """Time the end of these sessions from their instance's shutdown (see
        `shutdown_started`); the other sessions of instances shut down are not timed."""
        with self._lock:
            self._watched.update(pids)

    def shutdown_started(self, instance: str) -> None:
        with self._lock:
            self._shutdown_started[instance] = time.monotonic()

    def wait_gone(self, pids: set[int], timeout: float) -> bool:
        """Wait (bounded) until none of `pids` is in a sample; whether they all went."""
        limit = time.monotonic() + timeout
        with self._sampled:
            while pids & self._current:
                left = limit - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._sampled.wait(left)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(psycopg.Error):
            self._conn.close()

    def __enter__(self) -> ServerMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows: list[Any] = self._conn.execute(_SESSIONS, (self._app_name,)).fetchall()
            except psycopg.Error:
                return
            self._record(time.monotonic(), {int(row[0]) for row in rows})
            self._stop.wait(self._interval)

    def _record(self, now: float, pids: set[int]) -> None:
        with self._sampled:
            frozen = 0
            for pid in pids:
                owner = self._owners.get(pid)
                if owner is not None and self._frozen_since(owner) is not None:
                    frozen += 1
            for pid in self._current - pids:
                owner = self._owners.get(pid)
                if owner is None:
                    continue
                if owner in self._shutdown_started:
                    if pid in self._watched:
                        self.releases_after_shutdown.append(now - self._shutdown_started[owner])
                    continue
                since = self._frozen_since(owner)
                if since is not None:
                    self.releases_after_freeze.append(now - since)
            self._current = pids
            self.samples.append((now - self.origin, len(pids), frozen))
            self._sampled.notify_all()
