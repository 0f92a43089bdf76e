"""The load a simulated fleet serves, and the shapes of fleet it is served by.

Time is compressed: what takes minutes on Lambda (an instance frozen between bursts of
traffic, the server's ``idle_session_timeout``) takes a second here. What matters is
the order of the numbers, and it is kept: a request's database work is short next to
the request, a burst of traffic is why the fleet has as many instances as it has, the
server's idle timeout is longer than the pauses inside a burst and shorter than the
freeze between two waves of traffic.

A *shape* is one fleet: ``burst`` (on-demand instances, 3 per usable slot), ``scale``
(twice as many: where a direct pool must wait for slots and a proxy need not) and
``managed`` (Lambda Managed Instances: a few environments of several worker processes,
never frozen, sized so that environments x workers fit the slots).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Final

from .strategies import STRATEGIES

__all__ = ["SHAPES", "FleetParams", "Shape"]

SHAPES: Final = ("burst", "scale", "managed")

_DEFAULT_STRATEGIES: Final = {
    "burst": (
        "connect-per-request",
        "module-level",
        "serverless-pool",
        "serverless-pool-no-extension",
        "serverless-pool-pgbouncer",
    ),
    "scale": ("serverless-pool", "serverless-pool-pgbouncer"),
    "managed": ("module-level", "serverless-pool"),
}


@dataclass(frozen=True)
class Shape:
    """One fleet: how many environments, of which kind, and the strategies it runs."""

    name: str
    title: str
    #: on-demand: the most environments Lambda starts (one per concurrent request);
    #: Managed Instances: the environments
    instances: int
    #: Managed Instances: runtime worker processes per environment (None: on-demand)
    workers: int | None
    strategies: tuple[str, ...]

    @property
    def managed(self) -> bool:
        return self.workers is not None

    @property
    def users(self) -> int:
        """Concurrent users in a wave: one per request the fleet can serve at once."""
        return self.instances * (self.workers or 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "mode": "managed-instances" if self.managed else "on-demand",
            "instances": self.instances,
            "workers": self.workers,
            "users": self.users,
            "strategies": list(self.strategies),
        }


@dataclass(frozen=True)
class FleetParams:
    """What the fleet does, for every shape and strategy alike."""

    #: usable server slots (``max_connections`` less the superuser reserve and the
    #: simulation's own monitoring session); PgBouncer's pool has as many
    budget: int = 10
    #: shapes to run, in order (see `SHAPES`)
    shapes: tuple[str, ...] = SHAPES
    #: strategies to run in every shape instead of each shape's own list
    strategies: tuple[str, ...] = ()
    #: on-demand instances of the ``burst`` shape (0: 3 x budget); ``scale`` has twice
    #: as many
    instances: int = 0
    #: Managed Instances: runtime workers per environment (``AWS_LAMBDA_MAX_CONCURRENCY``)
    workers: int = 4
    #: waves of traffic; between two, every instance is frozen (or idle)
    waves: int = 2
    #: seconds every instance stays frozen between the end of a wave and the next
    pause: float = 1.0
    #: seconds over which the users of a wave arrive (uniformly, from the seed)
    spread: float = 0.2
    #: requests each user sends in a wave, one after the other
    burst: int = 3
    #: seconds between two requests of one user
    think: float = 0.02
    #: seconds of database work per request (one ``pg_sleep`` statement)
    db_time: float = 0.01
    #: seconds of other work per request, holding no transaction
    app_time: float = 0.03
    #: the server's ``idle_session_timeout``, seconds (also ServerlessPool's own
    #: ``idle_session_timeout`` setting; 900 on Lambda by default)
    idle_timeout: float = 0.5
    #: the function timeout (each invocation's deadline), seconds
    request_timeout: float = 10.0
    #: new on-demand environments are restored from a SnapStart snapshot of the init
    #: phase instead of running init in full (see docs/fleet.md)
    snapstart: bool = True
    #: seed of the arrival times (the same for every strategy)
    seed: int = 1

    @classmethod
    def quick(cls) -> FleetParams:
        """A small fleet for tests and the demo: the same story in about a third of the time."""
        return cls(
            budget=3,
            workers=3,
            burst=2,
            spread=0.05,
            pause=0.6,
            idle_timeout=0.3,
            request_timeout=8.0,
        )

    @property
    def burst_instances(self) -> int:
        return self.instances or 3 * self.budget

    def shape(self, name: str) -> Shape:
        """The shape called `name`, sized from these parameters."""
        strategies = self.strategies or _DEFAULT_STRATEGIES[name]
        if name == "burst":
            n = self.burst_instances
            title = f"on-demand, {n} instances for {self.budget} slots"
            return Shape(name, title, n, None, strategies)
        if name == "scale":
            n = 2 * self.burst_instances
            title = f"on-demand, {n} instances for {self.budget} slots"
            return Shape(name, title, n, None, strategies)
        if name == "managed":
            environments = max(1, self.budget // self.workers)
            plural = "s" if environments > 1 else ""
            title = (
                f"Managed Instances, {environments} environment{plural} x {self.workers}"
                f" workers for {self.budget} slots"
            )
            return Shape(name, title, environments, self.workers, strategies)
        raise ValueError(f"unknown fleet shape {name!r}; expected one of {', '.join(SHAPES)}")

    def all_shapes(self) -> list[Shape]:
        return [self.shape(name) for name in self.shapes]

    def validate(self) -> FleetParams:
        """Raise `ValueError` naming the first parameter out of range."""
        checks = (
            ("budget", 1 <= self.budget <= 1000, "between 1 and 1000"),
            ("instances", 0 <= self.instances <= 100, "between 1 and 100 (0: 3 x budget)"),
            ("workers", 1 <= self.workers <= 16, "between 1 and 16"),
            ("waves", 1 <= self.waves <= 20, "between 1 and 20"),
            ("burst", 1 <= self.burst <= 50, "between 1 and 50"),
            ("pause", self.pause >= 0, "at least 0"),
            ("spread", self.spread >= 0, "at least 0"),
            ("think", self.think >= 0, "at least 0"),
            ("db_time", self.db_time >= 0, "at least 0"),
            ("app_time", self.app_time >= 0, "at least 0"),
            ("idle_timeout", 0.05 <= self.idle_timeout <= 3600, "between 0.05 and 3600"),
            ("request_timeout", self.request_timeout >= 1, "at least 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"fleet parameter {name} must be {expected}, got {getattr(self, name)!r}"
                )
        for name in self.shapes:
            if name not in SHAPES:
                raise ValueError(
                    f"unknown fleet shape {name!r}; expected one of {', '.join(SHAPES)}"
                )
        for name in self.strategies:
            if name not in STRATEGIES:
                raise ValueError(
                    f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}"
                )
        if not self.shapes:
            raise ValueError("fleet parameter shapes must name at least one shape")
        return self

    def replace(self, **changes: object) -> FleetParams:
        return replace(self, **changes).validate()  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["shapes"] = list(self.shapes)
        data["strategies"] = list(self.strategies)
        return data
