"""The load a simulated fleet serves, and the defaults chosen to look like Lambda.

Time is compressed: what takes minutes on Lambda (an instance frozen between bursts of
traffic, a server-side idle timeout) takes a second or two here. What matters is the
ratio between the numbers, and those are kept realistic: a burst of traffic is why the
fleet has as many instances as it has, an instance is frozen far longer than it works,
and the idle timeout is shorter than the frozen gaps but longer than the think time
inside a burst.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["FleetParams"]


@dataclass(frozen=True)
class FleetParams:
    """What every instance of the fleet does, for every strategy alike."""

    #: usable server slots (``max_connections`` minus the superuser reserve)
    budget: int = 10
    #: instances (OS processes); Lambda scaled to this many because that many requests
    #: arrived at once
    instances: int = 30
    #: bursts of traffic; each instance is frozen between two of them
    waves: int = 4
    #: seconds between the starts of two waves
    wave_interval: float = 2.5
    #: seconds over which the requests of one wave arrive (uniformly)
    spread: float = 0.2
    #: requests an instance serves back to back in one wave
    burst: int = 2
    #: seconds between two requests of a burst (the instance stays warm)
    think: float = 0.02
    #: seconds of database work per request (``SELECT pg_sleep(service)``)
    service: float = 0.05
    #: server-side ``idle_session_timeout`` of the ServerlessPool strategy, seconds
    idle_session_timeout: float = 0.2
    #: the deadline of one request (Lambda's function timeout), seconds
    request_timeout: float = 10.0
    #: wall-clock cap of one strategy's run, seconds; 0 means computed from the above
    cap: float = 0.0
    #: seed of the arrival times (the same for every strategy)
    seed: int = 1

    @classmethod
    def quick(cls) -> FleetParams:
        """A smaller fleet for tests: same ratios, about a quarter of the time."""
        return cls(budget=5, instances=15, waves=2, wave_interval=2.0, request_timeout=8.0)

    @property
    def requests_per_instance(self) -> int:
        return self.waves * self.burst

    @property
    def run_cap(self) -> float:
        """Wall-clock seconds after which an instance stops, whatever is left."""
        if self.cap:
            return self.cap
        return self.waves * self.wave_interval + self.request_timeout + 5.0

    def validate(self) -> FleetParams:
        """Raise `ValueError` naming the first parameter out of range."""
        checks = (
            ("budget", self.budget >= 1, "at least 1"),
            ("instances", 1 <= self.instances <= 200, "between 1 and 200"),
            ("waves", self.waves >= 1, "at least 1"),
            ("burst", self.burst >= 1, "at least 1"),
            ("wave_interval", self.wave_interval > 0, "more than 0"),
            ("spread", self.spread >= 0, "at least 0"),
            ("think", self.think >= 0, "at least 0"),
            ("service", self.service >= 0, "at least 0"),
            ("idle_session_timeout", self.idle_session_timeout >= 0.001, "at least 0.001"),
            ("request_timeout", self.request_timeout > 0, "more than 0"),
            ("cap", self.cap >= 0, "at least 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"fleet parameter {name} must be {expected}, got {getattr(self, name)!r}"
                )
        return self

    def replace(self, **changes: object) -> FleetParams:
        return replace(self, **changes).validate()  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
