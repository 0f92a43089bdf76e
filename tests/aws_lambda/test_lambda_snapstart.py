"""SnapStart: instances restored from one snapshot, with the real `awslambdaric`
running the hooks registered through the real `snapshot_restore_py`.

The witness is ``pg_stat_activity``: a snapshot taken with a connection open would
hand one server session to every restored copy; the before-snapshot hook closes it.
"""

from __future__ import annotations

import json
from typing import Any

from lambda_testkit import FUNCTIONS, wait_until

from serverless_pool.testing.lambda_emulator import EmulatedFunction, Snapshot, http_api_event
from serverless_pool.testing.postgres import PostgresServer

RESTORED = 5


def get(path: str) -> dict[str, Any]:
    return http_api_event("GET", path, [("Host", "localhost")])


def test_restored_instances_share_no_server_session(
    db_env: dict[str, str], postgres: PostgresServer, app_name: str
) -> None:
    with Snapshot(
        "pool_function.handler", cwd=FUNCTIONS, env={**db_env, "CONNECT_ON_INIT": "1"}
    ) as snapshot:
        snapshot.take()
        # Init connected (connect_on_init); the before-snapshot hook closed it again.
        assert postgres.wait_for_backends(0, application_name=app_name) == []
        instances = [snapshot.restore() for _ in range(RESTORED)]
        results = [instance.invoke(get("/")) for instance in instances]
        assert all(r.ok for r in results), [r.payload for r in results]
        assert all(r.cold_start for r in results)
        bodies = [json.loads(r.payload["body"]) for r in results]
        assert [r.payload["statusCode"] for r in results] == [200] * RESTORED
        # Five processes, five server sessions: nothing carried over from the snapshot.
        assert len({b["pid"] for b in bodies}) == RESTORED
        backends = {b["backend"] for b in bodies}
        assert len(backends) == RESTORED
        assert {b.pid for b in postgres.backends(application_name=app_name)} == backends
        # Each opened its own connection after the restore (the first one was init's).
        assert {b["stats"]["connections_opened"] for b in bodies} == {2}
        assert [r.connections_opened for r in results] == [1] * RESTORED
        # The registration of the SIGTERM extension is part of the snapshot.
        assert [e.name for e in snapshot.extensions] == ["serverless-pool"]
        ended = instances[0].shutdown()
        assert (ended.sigterm, ended.graceful) == (True, True)
        assert postgres.wait_for_backends(RESTORED - 1, application_name=app_name)


def test_hooks_run_once_before_the_snapshot_and_once_per_restore() -> None:
    env = {"PLAIN_FUNCTION_SNAPSHOT_HOOKS": "1"}
    with Snapshot("plain_function.handler", cwd=FUNCTIONS, env=env) as snapshot:
        snapshot.take()
        # The hook's line travels through a pipe the emulator reads on a thread.
        assert wait_until(lambda: "before snapshot in" in snapshot.output())
        assert snapshot.output().count("before snapshot in") == 1
        first, second = snapshot.restore(), snapshot.restore()
        one, two = first.invoke({}), second.invoke({})
        assert one.payload["init_pid"] == two.payload["init_pid"]  # one init, copied
        assert one.payload["pid"] != two.payload["pid"]
        for instance, result in ((first, one), (second, two)):
            restored = f"after restore in {result.payload['pid']}"
            assert wait_until(lambda: restored in instance.output())  # noqa: B023
            assert "before snapshot" not in instance.output()


def test_a_snapstart_function_restores_each_new_environment() -> None:
    with EmulatedFunction(
        "plain_function.handler", cwd=FUNCTIONS, snapstart=True, max_instances=2
    ) as function:
        first = function.invoke({})
        assert first.ok
        assert first.cold_start
        assert function.snapshot is not None
        assert function.snapshot.taken
        assert first.payload["pid"] != first.payload["init_pid"]  # a copy, not the template
