"""``serverless-pool fleet`` as users run it: the text report, a server of theirs, bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import Cli

from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer


def test_a_given_server_is_used_with_its_free_slots_as_the_budget(
    postgres: PostgresServer, run_fleet: Callable[..., Cli]
) -> None:
    cli = run_fleet(
        "--quick", "--url", postgres.url(), "--shape", "burst", "--instances", "3",
        "--waves", "1",
    )  # fmt: skip
    assert cli.code == 0, cli.out + cli.err
    lines = cli.out.splitlines()
    assert lines[0].startswith("server: given by --url; fleet budget ")
    budget = int(lines[0].split("fleet budget ")[1].split()[0])
    assert budget > 3
    assert "on-demand, 3 instances for" in cli.out
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    # PgBouncer needs the throwaway server: skipped, and said so.
    assert "ServerlessPool → PgBouncer" not in rows
    assert "skipped: burst: serverless-pool-pgbouncer (needs the throwaway server)" in cli.out
    cells = [c.strip() for c in rows["ServerlessPool"].split("|")[1:-1]]
    assert cells[1] == "0 / 6"  # 3 users x 2 requests (quick), none failed
    assert APP_PASSWORD not in cli.out + cli.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--instances", "500"), "fleet parameter instances must be between 1 and 100 (0: 3"),
        (("--idle-timeout", "0"), "fleet parameter idle_timeout must be between 0.05 and 3600"),
        (("--budget", "50"), "the burst shape would run 150 instances at once, more than 120"),
        (("--url", "postgresql://u:pw@127.0.0.1:9/x", "--budget", "3"), "--budget sizes the"),
        (
            ("--url", "postgresql://u:pw@127.0.0.1:9/x", "--strategy", "serverless-pool-pgbouncer"),
            "the PgBouncer strategy starts its own PgBouncer",
        ),
        (("--url", "postgresql://u:pw@127.0.0.1:9/x"), "serverless-pool fleet: failed"),
        (("--plot", "/nonexistent/fleet.png"), "--plot: the folder of '/nonexistent/fleet.png'"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(
    run_fleet: Callable[..., Cli], args: tuple[str, ...], message: str
) -> None:
    cli = run_fleet(*args)
    assert message in cli.err
    assert cli.code == (1 if "failed" in message else 2)
    assert "pw@" not in cli.err
