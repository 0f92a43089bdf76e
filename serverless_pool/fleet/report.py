"""What one strategy's run measured, and the tables that compare the strategies.

Latencies are what a user of the function waits: from the request's arrival to its
answer, a cold start, a thaw and any wait for an instance or a server slot included.
Percentiles are of the requests that succeeded (a refused request is fast and says
nothing about the wait), taken separately for each kind of request:

- ``cold``: the request that started its environment (a SnapStart restore or a full
  init, then the request; Managed Instances: a worker's first request);
- ``thawed``: the instance had been frozen (Managed Instances: idle) at least the
  server's idle timeout, so its server session, if it had one, was gone;
- ``warm``: any other request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .strategies import LABELS

__all__ = [
    "KINDS",
    "Latency",
    "Request",
    "RunResult",
    "ShapeResult",
    "Spread",
    "Timeline",
    "format_tables",
    "percentile",
]

KINDS: Final = ("cold", "warm", "thawed")
_KIND_TITLES: Final = {"cold": "cold", "warm": "warm", "thawed": "after thaw"}


@dataclass(frozen=True)
class Request:
    """One request as its user saw it."""

    wave: int
    #: seconds since the run's start at which it was sent
    sent: float
    #: seconds until its answer
    seconds: float
    kind: str
    #: why it failed (None: it succeeded)
    error: str | None
    instance: str


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass(frozen=True)
class Latency:
    """Percentiles of the successful requests of one kind, in milliseconds."""

    n: int
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        return cls(
            len(seconds),
            _ms(percentile(seconds, 0.50)),
            _ms(percentile(seconds, 0.95)),
            _ms(percentile(seconds, 0.99)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "p50": self.p50, "p95": self.p95, "p99": self.p99}

    def cell(self) -> str:
        if not self.n:
            return "-"
        return " / ".join(_number(v) for v in (self.p50, self.p95, self.p99))


@dataclass(frozen=True)
class Spread:
    """How long something took, over its occurrences: count, median and maximum, seconds."""

    n: int
    p50: float | None
    max: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Spread:
        p50 = percentile(seconds, 0.5)
        return cls(
            len(seconds),
            None if p50 is None else round(p50, 3),
            round(max(seconds), 3) if seconds else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "p50": self.p50, "max": self.max}

    def cell(self) -> str:
        if not self.n or self.p50 is None or self.max is None:
            return "-"
        return f"{self.p50:.2f} ({self.max:.2f})"


@dataclass(frozen=True)
class Timeline:
    """The fleet's server sessions over time, in steps of `step` seconds (the most seen
    in each step): all of them, and those held by frozen instances."""

    step: float
    t: list[float]
    connections: list[int]
    frozen: list[int]

    @classmethod
    def of(cls, samples: Iterable[tuple[float, int, int]], step: float = 0.05) -> Timeline:
        buckets: dict[int, tuple[int, int]] = {}
        for at, count, frozen in samples:
            if at < 0:
                continue
            key = int(at / step)
            seen = buckets.get(key, (0, 0))
            buckets[key] = (max(seen[0], count), max(seen[1], frozen))
        keys = sorted(buckets)
        return cls(
            step,
            [round(k * step, 3) for k in keys],
            [buckets[k][0] for k in keys],
            [buckets[k][1] for k in keys],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "t": self.t,
            "connections": self.connections,
            "frozen": self.frozen,
        }


@dataclass
class RunResult:
    """One strategy's run on one shape of fleet."""

    shape: str
    strategy: str
    budget: int
    requests: list[Request] = field(default_factory=list, repr=False)
    #: requests that were planned but never answered (an instance lost, the run cut)
    missing: int = 0
    #: server sessions: the most seen at once, and the mean while traffic flowed
    peak_connections: int = 0
    mean_connections: float = 0.0
    #: sessions held by frozen instances (None: Managed Instances, never frozen)
    frozen_peak: int | None = None
    frozen_mean: float | None = None
    frozen_release: Spread = field(default_factory=lambda: Spread.of([]))
    #: whether the function registered the extension, and how many shutdowns got SIGTERM
    extension: bool = True
    shutdowns: int = 0
    sigterms: int = 0
    #: sessions open when their instance's shutdown began, with at least half the idle
    #: timeout still to live, and how long after the shutdown began they ended
    open_at_shutdown: int = 0
    shutdown_release: Spread = field(default_factory=lambda: Spread.of([]))
    #: sessions the server's log says its idle_session_timeout ended, in the whole run
    #: and among those open at shutdown (None: a server given by URL, no log to read)
    idle_timeouts: int | None = None
    shutdown_idle_timeouts: int | None = None
    #: connections the instances opened; environments started (cold starts, on-demand)
    connects: int = 0
    environments: int = 0
    seconds: float = 0.0
    timeline: Timeline = field(default_factory=lambda: Timeline(0.05, [], [], []))
    crashes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS.get(self.strategy, self.strategy)

    @property
    def errors(self) -> int:
        return self.missing + sum(1 for r in self.requests if r.error is not None)

    @property
    def error_kinds(self) -> dict[str, int]:
        kinds = Counter(r.error for r in self.requests if r.error is not None)
        if self.missing:
            kinds["not run (instance lost)"] += self.missing
        return dict(kinds.most_common())

    @property
    def within_budget(self) -> bool:
        return self.peak_connections <= self.budget

    def latency(self, kind: str | None = None) -> Latency:
        return Latency.of(
            [
                r.seconds
                for r in self.requests
                if r.error is None and (kind is None or r.kind == kind)
            ]
        )

    def failed_by_kind(self) -> dict[str, int]:
        counts = Counter(r.kind for r in self.requests if r.error is not None)
        return {kind: counts.get(kind, 0) for kind in KINDS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "strategy": self.strategy,
            "label": self.label,
            "budget": self.budget,
            "requests": len(self.requests) + self.missing,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "requests_by_kind": {k: sum(1 for r in self.requests if r.kind == k) for k in KINDS},
            "errors_by_kind": self.failed_by_kind(),
            "latency_ms": {
                **{kind: self.latency(kind).as_dict() for kind in KINDS},
                "all": self.latency().as_dict(),
            },
            "server_connections": {
                "peak": self.peak_connections,
                "mean": round(self.mean_connections, 2),
            },
            "held_by_frozen_instances": {
                "peak": self.frozen_peak,
                "mean": None if self.frozen_mean is None else round(self.frozen_mean, 2),
            },
            "slot_free_after_freeze_s": self.frozen_release.as_dict(),
            "ended_by_server_idle_timeout": self.idle_timeouts,
            "shutdown": {
                "extension": self.extension,
                "instances": self.shutdowns,
                "sigterm": self.sigterms,
                "sessions_open": self.open_at_shutdown,
                "slot_free_after_s": self.shutdown_release.as_dict(),
                "ended_by_server_idle_timeout": self.shutdown_idle_timeouts,
            },
            "connects": self.connects,
            "environments": self.environments,
            "seconds": round(self.seconds, 2),
            "timeline": self.timeline.as_dict(),
            "crashes": list(self.crashes),
        }


@dataclass
class ShapeResult:
    """The runs of one shape of fleet, one per strategy, on the same traffic."""

    shape: Mapping[str, Any]
    runs: list[RunResult]

    def as_dict(self) -> dict[str, Any]:
        return {**self.shape, "runs": [run.as_dict() for run in self.runs]}


def format_tables(shapes: Sequence[Mapping[str, Any]], budget: int) -> str:
    """Markdown tables, one per shape, from the report's JSON form (`ShapeResult.as_dict`)."""
    out: list[str] = []
    for shape in shapes:
        managed = shape["mode"] == "managed-instances"
        out.append(f"{shape['title']} ({shape['users']} concurrent users per wave):")
        out.append("")
        thaw = "after idle" if managed else "after thaw"
        out.append(
            "| strategy | failed / requests | p99 ms | cold ms p50 / p95 / p99 | warm ms"
            f" | {thaw} ms | server connections peak / mean (budget {budget})"
            " | held by frozen instances, peak | slot free s after freeze | after shutdown |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for run in shape["runs"]:
            out.append(_row(run, managed))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _row(run: Mapping[str, Any], managed: bool) -> str:
    latency = run["latency_ms"]
    failed = f"{run['errors']} / {run['requests']}"
    if run["errors"]:
        kinds = ", ".join(f"{k} {n}" for k, n in run["error_kinds"].items())
        failed += f" ({kinds})"
    conns = run["server_connections"]
    frozen = run["held_by_frozen_instances"]["peak"]
    frozen_cell = "n/a" if managed else ("-" if frozen is None else str(frozen))
    shutdown = run["shutdown"]
    after_shutdown = _spread_cell(shutdown["slot_free_after_s"])
    if shutdown["sessions_open"]:
        # Why the sessions ended: the pool closing on SIGTERM, or the server giving up.
        after_shutdown += " SIGTERM" if shutdown["sigterm"] else " no SIGTERM"
        if shutdown.get("ended_by_server_idle_timeout"):
            after_shutdown += ", idle timeout"
    after_freeze = "n/a" if managed else _spread_cell(run["slot_free_after_freeze_s"])
    return (
        f"| {run['label']} | {failed} | {_number(latency['all']['p99'])}"
        f" | {_latency_cell(latency['cold'])} | {_latency_cell(latency['warm'])}"
        f" | {_latency_cell(latency['thawed'])} | {conns['peak']} / {conns['mean']:.1f}"
        f" | {frozen_cell} | {after_freeze} | {after_shutdown} |"
    )


def _latency_cell(data: Mapping[str, Any]) -> str:
    return Latency(data["n"], data["p50"], data["p95"], data["p99"]).cell()


def _spread_cell(data: Mapping[str, Any]) -> str:
    return Spread(data["n"], data["p50"], data["max"]).cell()


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
