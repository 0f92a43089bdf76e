"""The latency table the request benchmarks print (and the README shows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["latency_table"]


def latency_table(rows: Sequence[Mapping[str, Any]], what: str, baseline: str) -> str:
    """Markdown: one row per strategy, its median and p99, ratio and failures under faults.

    `rows` carry ``strategy``, ``median_us``, ``p99_us``, ``ratio`` (to the baseline,
    paired by round), ``ratio_q1`` and ``ratio_q3`` (quartiles of the per-round ratios),
    ``failed`` and ``fault_requests``.
    """
    lines = [
        f"| {what} | median µs | p99 µs | × {baseline} | quartiles of rounds"
        " | failed when the server ends the backend |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['strategy']} | {row['median_us']:.0f} | {row['p99_us']:.0f}"
            f" | {row['ratio']:.2f} | {row['ratio_q1']:.2f}–{row['ratio_q3']:.2f}"
            f" | {row['failed']}/{row['fault_requests']} |"
        )
    return "\n".join(lines)
