"""Writers across a failover, against a real primary and a streaming standby.

The primary replicates synchronously to the standby (as RDS Multi-AZ does), so a write
the client saw committed is on the standby. A relay in front plays the writer's DNS
name: after the failover it still points at the old primary, back as a read-only
server, until the test points it at the promoted standby, as DNS follows 15-20 s later
on AWS.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from serverless_pool import ServerlessPool, deadline_after
from serverless_pool.errors import CommitOutcomeUnknown, PoolTimeout
from serverless_pool.testing.postgres import PostgresServer
from serverless_pool.testing.relay import Relay
from serverless_pool.testing.replication import StandbyServer, demote, is_in_recovery

WRITE_DEADLINE = 10.0


@pytest.fixture
def cluster(
    make_postgres: Callable[..., PostgresServer],
) -> Iterator[tuple[PostgresServer, StandbyServer]]:
    primary = make_postgres(settings={"synchronous_commit": "on"})
    standby = StandbyServer.clone(primary, name="standby1")
    try:
        primary.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        primary.execute("SELECT pg_reload_conf()")
        with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE writes (id int PRIMARY KEY, server_port int NOT NULL)")
        yield primary, standby
    finally:
        standby.stop()


def _rows(server: PostgresServer, query: str) -> list[tuple[int, ...]]:
    with psycopg.connect(server.conninfo()) as conn:
        return conn.execute(query).fetchall()


class Writer:
    """An app's write path: one transaction per request, each under a deadline."""

    def __init__(self, pool: ServerlessPool) -> None:
        self.pool = pool
        self.committed: list[int] = []
        self.on_read_only_server = 0

    def write(self, key: int) -> None:
        with deadline_after(WRITE_DEADLINE), self.pool.connection() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row is not None
            self.on_read_only_server += bool(row[0])
            with conn.transaction():
                conn.execute("INSERT INTO writes VALUES (%s, current_setting('port')::int)", (key,))
        self.committed.append(key)


def _fail_over(primary: PostgresServer, standby: StandbyServer) -> None:
    primary.stop_server("immediate")  # the writer's machine dies
    standby.promote()
    demote(primary)  # and comes back as a read-only replica, where DNS still points
    assert is_in_recovery(primary)


def test_writes_succeed_within_the_deadline_after_a_failover_with_no_data_loss(
    cluster: tuple[PostgresServer, StandbyServer], app_name: str
) -> None:
    primary, standby = cluster
    with Relay((primary.host, primary.port)) as name, ServerlessPool(
        name.conninfo(), max_size=1, application_name=app_name, environ={}
    ) as pool:  # fmt: skip
        writer = Writer(pool)
        for key in range(20):
            writer.write(key)
        _fail_over(primary, standby)
        # DNS follows a while later: the pool meanwhile keeps refusing the read-only server.
        follow = threading.Timer(1.0, name.point_at, args=[(standby.host, standby.port)])
        follow.start()
        try:
            for key in range(20, 40):
                writer.write(key)  # raises if a write fails
        finally:
            follow.cancel()
        stats = pool.stats()
    rows = _rows(standby, "SELECT id, server_port FROM writes ORDER BY id")
    assert [key for key, _ in rows] == writer.committed == list(range(40))  # 0 data loss
    assert {port for key, port in rows if key >= 20} == {standby.port}
    assert writer.on_read_only_server == 0
    # The demoted server was reached, and refused, before the name followed.
    assert stats["connect_retries"] >= 1
    reached = [c for c in name.connections if c.target == (primary.host, primary.port)]
    assert len(reached) > 1


def test_a_multi_host_string_whose_first_host_is_the_demoted_server_writes_to_the_new_one(
    cluster: tuple[PostgresServer, StandbyServer], app_name: str
) -> None:
    primary, standby = cluster
    _fail_over(primary, standby)
    hosts = f"host={primary.host},{standby.host} port={primary.port},{standby.port}"
    with ServerlessPool(
        f"{hosts} dbname=app user=app password=app-secret",
        max_size=1, application_name=app_name, environ={},
    ) as pool:  # fmt: skip
        writer = Writer(pool)
        for key in range(100, 110):
            writer.write(key)
        assert pool.stats()["connections_opened"] == 1
    assert writer.on_read_only_server == 0
    assert primary.backends(application_name=app_name) == []
    rows = _rows(standby, "SELECT server_port FROM writes WHERE id >= 100")
    assert {port for (port,) in rows} == {standby.port}


def test_a_connection_whose_server_turned_read_only_is_closed_and_the_write_waits_for_a_writer(
    make_postgres: Callable[..., PostgresServer], app_name: str
) -> None:
    server = make_postgres()
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE writes (id int PRIMARY KEY, server_port int NOT NULL)")
    pool = ServerlessPool(server.conninfo(), max_size=1, application_name=app_name, environ={})
    try:
        writer = Writer(pool)
        writer.write(1)
        # The server goes read-only under a live session (as a demoted or a full one does).
        server.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        server.execute("SELECT pg_reload_conf()")
        _until_the_session_sees(pool, "on")  # the reload reaches each backend in its time
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            writer.write(2)
        assert pool.stats()["read_only_errors"] == 1
        # The next write does not get that connection: it waits, with backoff within its
        # deadline, for a server that accepts writes.
        with deadline_after(0.5), pytest.raises(PoolTimeout, match="session is read-only"):
            pool.acquire()
        writable = threading.Timer(0.5, _writable, args=[server])
        writable.start()
        writer.write(3)
        writable.join()
        stats = pool.stats()
    finally:
        pool.close()
    assert writer.committed == [1, 3]
    assert stats["replaced_bad_state"] == 1  # the connection that met the read-only server
    assert stats["connections_opened"] == 2


def _until_the_session_sees(pool: ServerlessPool, value: str) -> None:
    deadline = time.monotonic() + 30
    with pool.connection() as conn:
        while conn.execute("SHOW default_transaction_read_only").fetchone() != (value,):
            assert time.monotonic() < deadline, "the server did not reload its settings"
            time.sleep(0.01)


def _writable(server: PostgresServer) -> None:
    server.execute("ALTER SYSTEM RESET default_transaction_read_only")
    server.execute("SELECT pg_reload_conf()")


def test_the_apps_own_read_only_transaction_keeps_its_connection(
    make_pool: Callable[..., ServerlessPool],
) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        conn.read_only = True
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), conn.transaction():
            conn.execute("CREATE TEMP TABLE t (x int)")
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid
    assert pool.stats().get("read_only_errors", 0) == 0


@pytest.mark.parametrize("reached_the_server", [True, False])
def test_a_connection_lost_during_commit_raises_commit_outcome_unknown(
    postgres: PostgresServer, app_name: str, reached_the_server: bool
) -> None:
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS outcomes (key uuid PRIMARY KEY)")
    key = uuid.uuid4()
    with Relay((postgres.host, postgres.port)) as relay, ServerlessPool(
        relay.conninfo(), max_size=1, application_name=app_name, environ={}
    ) as pool:  # fmt: skip
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        relay.cut_when_client_sends(b"COMMIT", forward=reached_the_server)
        with pool.connection() as conn:
            with pytest.raises(CommitOutcomeUnknown, match="may or may not have been committed"):
                _insert(conn, key)
            assert conn.broken or conn.closed
        # Never retried: the next borrow is a new connection, and the row is there once or not.
        with pool.connection() as conn:
            found = conn.execute("SELECT count(*) FROM outcomes WHERE key = %s", (key,)).fetchone()
        assert pool.stats()["connections_opened"] == 2
    assert found == ((1,) if reached_the_server else (0,))


def _insert(conn: psycopg.Connection[tuple[object, ...]], key: uuid.UUID) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO outcomes VALUES (%s)", (key,))
