"""The fleet simulation: many Lambda-like instances against few database slots.

``simulate()`` runs each strategy (connect per request, a module-level connection,
`ServerlessPool`) on the same traffic against the same server and reports, per
strategy, the requests, the errors by kind, the peak of server sessions and the
latencies. ``serverless-pool fleet`` is its command line.
"""

from __future__ import annotations

from .params import FleetParams
from .report import StrategyResult, format_table
from .runner import FleetReport, simulate
from .strategies import STRATEGIES

__all__ = ["STRATEGIES", "FleetParams", "FleetReport", "StrategyResult", "format_table", "simulate"]
