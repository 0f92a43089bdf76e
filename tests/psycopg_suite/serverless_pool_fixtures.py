"""A pytest plugin that runs psycopg's own tests on connections lent by a `ServerlessPool`.

Loaded by ``tests/psycopg_suite/run.py`` with ``-p serverless_pool_fixtures``. Once
psycopg's ``tests.fix_db`` is registered, it registers `Overrides` after it, so that its
fixtures win over fix_db's (of fixtures of one name, pytest uses the last registered):

- ``conn`` borrows from a pool configured like ``psycopg.connect()`` (autocommit off,
  ``prepare_threshold=5``);
- ``conn_cls`` is a class whose ``connect()`` borrows from a pool configured like that
  call: one pool per conninfo (the keyword arguments merged in), ``autocommit`` and
  ``prepare_threshold`` (``read_only`` when ``target_session_attrs`` asks for a
  standby); ``row_factory`` and ``cursor_factory`` are set on the borrowed connection,
  as a user of the pool would; ``context`` cannot be given to a pool and raises
  `TypeError`.

``close()`` closes a borrowed connection, as psycopg's does, and returns it to its pool
(which discards it); every connection a test borrowed and did not close goes back to
its pool when the test ends. ``svcconn``, the suite's service connection for the whole
session, stays psycopg's own.

``PSYCOPG_SUITE_MODE`` chooses when borrows happen: ``plain`` borrows as the test asks;
``back-to-back`` returns a connection to the pool right before every borrow, twice, so
that each borrow comes right after a return (a WSGI server under load), with the reset's
answer usually still to come. ``PSYCOPG_SUITE_RESULTS`` names the JSON file where the
outcome of every test is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from serverless_pool import ServerlessPool
from serverless_pool.connection import PooledConnection

MODES = ("plain", "back-to-back")
#: Pools kept open at once; the least recently used is closed past that (each holds
#: idle server connections, and some tests connect with options of their own).
MAX_POOLS = 4
READ_ONLY = ("read-only", "standby", "prefer-standby")


class Lender:
    """Lends connections from one pool per way of connecting, and takes them back."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise pytest.UsageError(f"PSYCOPG_SUITE_MODE: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self.pools: dict[tuple[str, bool, int | None, bool], ServerlessPool] = {}
        self.lent: list[tuple[ServerlessPool, PooledConnection[Any]]] = []
        self.borrows = 0
        self.in_pipeline = 0  # borrows lent with libpq in pipeline mode

    def borrow(
        self,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        context: Any = None,
        row_factory: Any = None,
        cursor_factory: Any = None,
        **kwargs: Any,
    ) -> PooledConnection[Any]:
        if context is not None:
            raise TypeError("a pooled connection takes no context: its adapters are the pool's")
        conninfo = make_conninfo(conninfo, **kwargs)
        # A pool for writes refuses a conninfo that asks for a standby: a user asking
        # for one configures a pool of reads.
        read_only = conninfo_to_dict(conninfo).get("target_session_attrs") in READ_ONLY
        key = (conninfo, autocommit, prepare_threshold, read_only)
        pool = self.pools.pop(key, None)
        if pool is None:
            pool = ServerlessPool(
                conninfo,
                name=f"suite{len(self.pools)}",
                autocommit=autocommit,
                prepare_threshold=prepare_threshold,
                read_only=read_only,
                max_size=16,
                acquire_timeout=10.0,
            )
        self.pools[key] = pool  # most recently used last
        if self.mode == "back-to-back":
            for _ in range(2):
                pool.release(pool.acquire())
        conn = pool.acquire()
        self.lent.append((pool, conn))
        # Released where the test closes it: closed first, as psycopg's close() does
        # (the pool then discards it), so that the pool keeps nothing of it.
        close = type(conn).close

        def close_and_release() -> None:
            close(conn)
            self._release(pool, conn)

        conn.close = close_and_release  # type: ignore[method-assign]
        self.borrows += 1
        if conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
            self.in_pipeline += 1
        if row_factory is not None:
            conn.row_factory = row_factory
        if cursor_factory is not None:
            conn.cursor_factory = cursor_factory
        return conn

    def _release(self, pool: ServerlessPool, conn: PooledConnection[Any]) -> None:
        for i, (_, lent) in enumerate(self.lent):
            if lent is conn:
                del self.lent[i]
                del conn.close  # psycopg's own again
                pool.release(conn)
                return

    def give_back(self, conn: PooledConnection[Any]) -> None:
        """Return `conn` to its pool, unless the test closed it (then it is back)."""
        for pool, lent in self.lent:
            if lent is conn:
                self._release(pool, conn)
                return

    def release_all(self) -> None:
        """Return what the test borrowed and did not close, at the test's end."""
        errors: list[BaseException] = []
        while self.lent:
            pool, conn = self.lent[-1]
            try:
                self._release(pool, conn)
            except Exception as err:  # reported once all are back
                errors.append(err)
        while len(self.pools) > MAX_POOLS:
            oldest = next(iter(self.pools))
            self.pools.pop(oldest).close()
        if errors:
            raise errors[0]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()


LENDER = Lender(os.environ.get("PSYCOPG_SUITE_MODE", "plain"))


class BorrowedConnection(PooledConnection[Any]):
    """What ``conn_cls`` is: ``connect()`` borrows a `PooledConnection` from the pool."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:  # type: ignore[override]
        return LENDER.borrow(conninfo, **kwargs)


def _make_overrides() -> ModuleType:
    module = ModuleType("serverless_pool_fixture_overrides")

    @pytest.fixture(scope="session")
    def conn_cls(session_dsn: str) -> type[psycopg.Connection[Any]]:
        return BorrowedConnection

    @pytest.fixture(scope="session")
    def svcconn(session_dsn: str) -> Iterator[psycopg.Connection[Any]]:
        # The suite's own service connection (it makes types and extensions, watches
        # sessions, sends notifications): not what is under test, and held for the
        # whole session, so psycopg's own, as the suite has it.
        with psycopg.Connection.connect(session_dsn, autocommit=True) as svcconn:
            yield svcconn

    @pytest.fixture
    def conn(
        conn_cls: type[psycopg.Connection[Any]], dsn: str, request: pytest.FixtureRequest
    ) -> Iterator[psycopg.Connection[Any]]:
        from tests.fix_db import check_connection_version

        check_connection_version(request.node)
        conn = conn_cls.connect(dsn)
        yield conn
        # Where psycopg's fixture closes it: before the teardown of the fixtures set up
        # ahead of it, which may wait for its locks (a table dropped through svcconn).
        LENDER.give_back(conn)

    @pytest.fixture(autouse=True)
    def _serverless_pool_return(request: pytest.FixtureRequest) -> Iterator[None]:
        before, in_pipeline = LENDER.borrows, LENDER.in_pipeline
        yield
        request.node.user_properties.append(("borrows", LENDER.borrows - before))
        request.node.user_properties.append(("in_pipeline", LENDER.in_pipeline - in_pipeline))
        LENDER.release_all()

    module.conn_cls = conn_cls  # type: ignore[attr-defined]
    module.conn = conn  # type: ignore[attr-defined]
    module.svcconn = svcconn  # type: ignore[attr-defined]
    module._serverless_pool_return = _serverless_pool_return  # type: ignore[attr-defined]
    return module


Overrides = _make_overrides()


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    if getattr(plugin, "__name__", None) == "tests.fix_db" and not manager.is_registered(Overrides):
        manager.register(Overrides, "serverless_pool_fixture_overrides")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_RESULTS] = {}
    # psycopg's conftest marks the cache at the start of a session and clears the mark
    # at its end, to refuse a rerun after a crash; xdist's workers share one cache (a new
    # one for each run here), where each would take the others' marks for a crash.
    if session.config.cache is not None:
        session.config.cache.set("segfault", False)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.pluginmanager.is_registered(Overrides) and session.items:
        raise pytest.UsageError("psycopg's tests.fix_db was not loaded: nothing to override")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG.get("config")
    if config is None or hasattr(config, "workerinput"):
        return
    results: dict[str, dict[str, Any]] = config.stash[_RESULTS]
    entry = results.setdefault(report.nodeid, {"outcome": "passed"})
    for name, value in report.user_properties:
        if name in ("borrows", "in_pipeline"):
            entry[name] = value
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            entry["outcome"] = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            entry["outcome"] = "failed"
            entry["cause"] = _cause(report)
        elif report.skipped:
            entry["outcome"] = "skipped"
            entry["cause"] = _cause(report)
    elif report.failed:
        entry["outcome"] = "error"
        entry.setdefault("cause", f"in {report.when}: {_cause(report)}")
    elif report.skipped and report.when == "setup":
        entry["outcome"] = "skipped"
        entry["cause"] = _cause(report)


_RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()
_CONFIG: dict[str, pytest.Config] = {}


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG["config"] = config


def pytest_sessionfinish(session: pytest.Session) -> None:
    LENDER.close()
    path = os.environ.get("PSYCOPG_SUITE_RESULTS")
    if path and not hasattr(session.config, "workerinput"):
        Path(path).write_text(json.dumps(session.config.stash[_RESULTS], indent=0))


def _cause(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


if "tests.fix_db" in sys.modules:  # registered before this plugin: nothing to wait for
    raise RuntimeError("load serverless_pool_fixtures with -p, before psycopg's conftest")
