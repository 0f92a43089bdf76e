"""The fleet simulation: Lambda instances on the emulator against few database slots.

``simulate()`` runs each shape of fleet (on-demand instances 3 and 6 per usable slot,
Lambda Managed Instances) with each strategy (connect per request, a module-level
connection, `ServerlessPool` with and without the shutdown extension, and behind
PgBouncer) on the same traffic against the same server, and reports per run the
failed requests by kind, the server's sessions over time (peak, mean, held by frozen
instances), latency percentiles of cold, warm and thawed requests, and how soon a
frozen or shut-down instance's slot is free again. ``serverless-pool fleet`` is its
command line; `serverless_pool.fleet.plot` draws the report.
"""

from __future__ import annotations

from .params import SHAPES, FleetParams, Shape
from .report import RunResult, ShapeResult, format_tables
from .runner import FleetReport, simulate
from .strategies import LABELS, STRATEGIES

__all__ = [
    "LABELS",
    "SHAPES",
    "STRATEGIES",
    "FleetParams",
    "FleetReport",
    "RunResult",
    "Shape",
    "ShapeResult",
    "format_tables",
    "simulate",
]
