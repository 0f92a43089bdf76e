"""How the request benchmarks compare strategies: paired by round.

Every benchmark runs its strategies in interleaved rounds (a short batch of each per
round, in a varying order). Load on a shared machine drifts over seconds, by more than
the differences measured; a ratio taken within each round, then the median over the
rounds, cancels that drift, where a ratio of two medians over the whole run would not.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["paired_ratio", "ratio_quartiles"]


def _round_ratios(rounds: Sequence[float], reference: Sequence[float]) -> list[float]:
    if len(rounds) != len(reference) or not rounds:
        raise ValueError("paired ratios need the same, non-zero number of rounds")
    return [value / ref for value, ref in zip(rounds, reference, strict=True)]


def paired_ratio(rounds: Sequence[float], reference: Sequence[float]) -> float:
    """The median over rounds of each round's median over the reference's in that round."""
    return statistics.median(_round_ratios(rounds, reference))


def ratio_quartiles(rounds: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles of the per-round ratios: how much they spread."""
    q1, _, q3 = statistics.quantiles(_round_ratios(rounds, reference), n=4)
    return q1, q3
