"""What a strategy's run measured, and the table that compares the strategies."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .instance import InstanceResult

__all__ = ["StrategyResult", "format_table", "percentile", "summarize"]


@dataclass(frozen=True)
class StrategyResult:
    """One strategy's run: its requests, its failures and its server footprint."""

    strategy: str
    instances: int
    budget: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    #: most client sessions of this fleet seen at once in ``pg_stat_activity``
    peak_connections: int
    #: server connections the instances opened in all
    connects: int
    #: median and 99th percentile latency of the successful requests, milliseconds
    p50_ms: float | None
    p99_ms: float | None
    seconds: float
    crashes: list[str] = field(default_factory=list)

    @property
    def within_budget(self) -> bool:
        return self.peak_connections <= self.budget

    def as_row(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "instances": self.instances,
            "budget": self.budget,
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "peak_connections": self.peak_connections,
            "connects": self.connects,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "seconds": round(self.seconds, 2),
            "crashes": list(self.crashes),
        }


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(
    strategy: str,
    results: Iterable[InstanceResult],
    *,
    instances: int,
    budget: int,
    expected_requests: int,
    peak: int,
    seconds: float,
) -> StrategyResult:
    """Fold the instances' results into one row; a missing instance counts as failed."""
    results = list(results)
    kinds: Counter[str] = Counter()
    ok: list[float] = []
    requests = 0
    for result in results:
        for latency, kind in zip(result.latencies, result.errors, strict=True):
            requests += 1
            if kind is None:
                ok.append(latency)
            else:
                kinds[kind] += 1
    missing = expected_requests - requests
    if missing > 0:
        kinds["not run (instance lost)"] += missing
    p50 = percentile(ok, 0.50)
    p99 = percentile(ok, 0.99)
    return StrategyResult(
        strategy=strategy,
        instances=instances,
        budget=budget,
        requests=expected_requests,
        errors=sum(kinds.values()),
        error_kinds=dict(kinds.most_common()),
        peak_connections=peak,
        connects=sum(r.connects for r in results),
        p50_ms=None if p50 is None else round(p50 * 1000, 1),
        p99_ms=None if p99 is None else round(p99 * 1000, 1),
        seconds=seconds,
        crashes=[f"instance {r.index}: {r.crash}" for r in results if r.crash],
    )


def format_table(rows: Sequence[StrategyResult]) -> str:
    """A Markdown table of the strategies, side by side."""
    lines = [
        "| strategy | instances | budget | requests | errors | error kinds"
        " | peak connections | connects | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        kinds = ", ".join(f"{k}: {n}" for k, n in r.error_kinds.items()) or "-"
        lines.append(
            f"| {r.strategy} | {r.instances} | {r.budget} | {r.requests} | {r.errors}"
            f" | {kinds} | {r.peak_connections} | {r.connects}"
            f" | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
