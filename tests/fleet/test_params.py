"""The fleet's parameters: shapes sized from the budget, and bad values refused by name."""

from __future__ import annotations

import pytest

from serverless_pool.fleet.params import FleetParams
from serverless_pool.fleet.runner import arrivals


def test_the_shapes_are_sized_from_the_budget() -> None:
    params = FleetParams(budget=10)
    burst, scale, managed = params.all_shapes()
    assert (burst.instances, burst.users, burst.managed) == (30, 30, False)
    assert (scale.instances, scale.users) == (60, 60)
    # Managed Instances: environments x workers fit the slots (one connection per worker).
    assert (managed.instances, managed.workers, managed.users) == (2, 4, 8)
    assert "serverless-pool-pgbouncer" in scale.strategies
    only = params.replace(strategies=("serverless-pool",)).all_shapes()
    assert {shape.strategies for shape in only} == {("serverless-pool",)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": 0}, "fleet parameter budget must be between 1 and 1000, got 0"),
        ({"instances": 500}, "fleet parameter instances must be between 1 and 100"),
        ({"idle_timeout": 0.0}, "fleet parameter idle_timeout must be between 0.05 and 3600"),
        ({"shapes": ("huge",)}, "unknown fleet shape 'huge'; expected one of burst, scale"),
        ({"strategies": ("psycopg",)}, "unknown strategy 'psycopg'; expected one of"),
    ],
)
def test_a_value_out_of_range_is_refused_by_name(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        FleetParams().replace(**change)


def test_arrivals_are_the_same_for_every_strategy_and_inside_the_spread() -> None:
    params = FleetParams.quick()
    first = [arrivals(params, "burst", wave, 9) for wave in range(params.waves)]
    assert first == [arrivals(params, "burst", wave, 9) for wave in range(params.waves)]
    assert first[0] != first[1]
    assert all(0 <= at <= params.spread for wave in first for at in wave)
