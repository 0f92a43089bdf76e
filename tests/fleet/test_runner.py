"""The fleet on the Lambda emulator: what each strategy does to the requests and to the
server, read from one quick run (on-demand instances 3 per slot, Managed Instances)
made through the command line. Counts only: no assertion on a time."""

from __future__ import annotations

from conftest import FleetRun

from serverless_pool.testing.postgres import APP_PASSWORD, SUPERUSER_PASSWORD

POOLED = ("serverless-pool", "serverless-pool-no-extension", "serverless-pool-pgbouncer")


def test_every_strategy_serves_the_same_traffic_on_instances_of_the_emulator(
    fleet_run: FleetRun,
) -> None:
    params = fleet_run.report["params"]
    burst = fleet_run.report["shapes"][0]
    assert burst["name"] == "burst"
    assert burst["instances"] == 3 * fleet_run.report["budget"]
    assert [r["strategy"] for r in burst["runs"]] == [
        "connect-per-request",
        "module-level",
        "serverless-pool",
        "serverless-pool-no-extension",
        "serverless-pool-pgbouncer",
    ]
    planned = burst["users"] * params["waves"] * params["burst"]
    for run in burst["runs"]:
        assert run["requests"] == planned
        assert run["crashes"] == []
        # Every environment's first request was a cold start, and no other was.
        assert run["requests_by_kind"]["cold"] == run["environments"]
        assert 1 <= run["environments"] <= burst["instances"]


def test_connect_per_request_fails_requests_when_a_burst_exceeds_the_slots(
    fleet_run: FleetRun,
) -> None:
    run = fleet_run.run("burst", "connect-per-request")
    assert run["error_kinds"].get("too many clients", 0) > 0
    assert run["server_connections"]["peak"] <= run["budget"]
    # It holds nothing between requests, frozen or not.
    assert run["held_by_frozen_instances"]["peak"] == 0


def test_a_module_level_connection_starves_other_instances_and_fails_after_a_thaw(
    fleet_run: FleetRun,
) -> None:
    run = fleet_run.run("burst", "module-level")
    assert run["error_kinds"].get("too many clients", 0) > 0
    # The server ended the session of a frozen instance; its next request failed.
    assert run["error_kinds"].get("killed by idle timeout", 0) > 0
    assert run["errors_by_kind"]["thawed"] > 0


def test_serverless_pool_serves_every_request_within_the_budget(fleet_run: FleetRun) -> None:
    for shape in fleet_run.report["shapes"]:
        for run in shape["runs"]:
            if run["strategy"] not in POOLED:
                continue
            assert run["errors"] == 0, (shape["name"], run["strategy"], run["error_kinds"])
            assert 0 < run["server_connections"]["peak"] <= run["budget"]
    assert fleet_run.cli.code == 0, fleet_run.cli.err


def test_frozen_instances_give_their_slot_back_once_the_server_idle_timeout_passes(
    fleet_run: FleetRun,
) -> None:
    for strategy in ("module-level", "serverless-pool"):
        run = fleet_run.run("burst", strategy)
        released = run["slot_free_after_freeze_s"]["n"]
        # Sessions vanished while their instance was stopped: only the server ends those,
        # and its log says why.
        assert released > 0
        assert run["ended_by_server_idle_timeout"] >= released
        frozen = run["timeline"]["frozen"]
        peak = frozen.index(max(frozen))
        assert max(frozen) > 0
        assert 0 in frozen[peak:]


def test_a_thawed_instance_serves_without_a_failed_request(fleet_run: FleetRun) -> None:
    for strategy in POOLED:
        run = fleet_run.run("burst", strategy)
        assert run["requests_by_kind"]["thawed"] > 0
        assert run["errors_by_kind"] == {"cold": 0, "warm": 0, "thawed": 0}
    direct = fleet_run.run("burst", "serverless-pool")
    # The sessions the server ended while frozen were replaced, unseen by the requests.
    assert direct["connects"] > direct["environments"]


def test_a_shutdown_with_the_extension_frees_the_slot_through_sigterm(
    fleet_run: FleetRun,
) -> None:
    run = fleet_run.run("burst", "serverless-pool")
    shutdown = run["shutdown"]
    assert shutdown["extension"] is True
    assert shutdown["sigterm"] == shutdown["instances"] == run["environments"]
    assert shutdown["sessions_open"] > 0
    # Every session still young at shutdown ended, and not all by the server's timeout:
    # the pool closed them when SIGTERM came (the slot is free within milliseconds, see
    # docs/fleet.md; a time is not asserted).
    assert shutdown["slot_free_after_s"]["n"] == shutdown["sessions_open"]
    assert shutdown["ended_by_server_idle_timeout"] < shutdown["sessions_open"]


def test_a_shutdown_without_the_extension_leaves_the_slot_to_the_idle_timeout(
    fleet_run: FleetRun,
) -> None:
    run = fleet_run.run("burst", "serverless-pool-no-extension")
    shutdown = run["shutdown"]
    assert shutdown["extension"] is False
    assert shutdown["sigterm"] == 0
    assert shutdown["sessions_open"] > 0
    assert shutdown["ended_by_server_idle_timeout"] == shutdown["sessions_open"]


def test_behind_pgbouncer_no_frozen_instance_holds_a_server_slot(fleet_run: FleetRun) -> None:
    run = fleet_run.run("burst", "serverless-pool-pgbouncer")
    assert run["errors"] == 0
    assert run["held_by_frozen_instances"]["peak"] == 0
    assert 0 < run["server_connections"]["peak"] <= run["budget"]
    # One client connection per instance, to PgBouncer, kept while frozen.
    assert run["connects"] == run["environments"]


def test_managed_instances_hold_at_most_one_connection_per_worker(fleet_run: FleetRun) -> None:
    (managed,) = [s for s in fleet_run.report["shapes"] if s["name"] == "managed"]
    assert managed["mode"] == "managed-instances"
    assert managed["instances"] * managed["workers"] <= fleet_run.report["budget"]
    run = fleet_run.run("managed", "serverless-pool")
    assert run["errors"] == 0
    assert run["environments"] == managed["instances"]
    assert run["requests_by_kind"]["cold"] <= managed["instances"] * managed["workers"]
    assert run["server_connections"]["peak"] <= managed["instances"] * managed["workers"]
    assert run["held_by_frozen_instances"]["peak"] is None  # never frozen
    # A module-level connection left idle is ended by the server all the same.
    assert fleet_run.run("managed", "module-level")["errors_by_kind"]["thawed"] > 0


def test_no_password_appears_in_the_output(fleet_run: FleetRun) -> None:
    text = fleet_run.cli.out + fleet_run.cli.err
    assert APP_PASSWORD not in text
    assert SUPERUSER_PASSWORD not in text
