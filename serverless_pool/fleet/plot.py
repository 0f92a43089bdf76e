"""The fleet report as a picture: server connections over time, and latency percentiles.

`render()` draws from the report's JSON form (``serverless-pool fleet --json``) and
nothing else, so everything the picture shows is in the JSON. One row per shape of
fleet: on the left, the server sessions of each strategy's run over time, with the
budget as a dashed line; on the right, for each strategy, the p50, p95 and p99 latency
of its cold, warm and thawed requests (log scale), and its failed requests.

Needs matplotlib (``pip install 'serverless-pool[plot]'``), imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from .report import KINDS

__all__ = ["PlotUnavailable", "render"]

_STRATEGY_COLOURS: Final = {
    "connect-per-request": "#9467bd",
    "module-level": "#8c564b",
    "serverless-pool": "#1f77b4",
    "serverless-pool-no-extension": "#17becf",
    "serverless-pool-pgbouncer": "#2ca02c",
}
_KIND_COLOURS: Final = {"cold": "#1f3f8f", "warm": "#f28e2b", "thawed": "#59a14f"}
_KIND_NAMES: Final = {"cold": "cold", "warm": "warm", "thawed": "after thaw / idle"}
_SHORT: Final = {
    "connect-per-request": "per request",
    "module-level": "module-level",
    "serverless-pool": "ServerlessPool",
    "serverless-pool-no-extension": "SP, no ext.",
    "serverless-pool-pgbouncer": "SP→PgBouncer",
}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def render(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Draw `report` (`FleetReport.as_dict()`, or its JSON read back) as a PNG at `path`."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'serverless-pool[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: never a window, no display needed
    import matplotlib.pyplot as plt

    shapes = report["shapes"]
    budget = report["budget"]
    fig, axes = plt.subplots(
        len(shapes),
        2,
        figsize=(12, 3.4 * len(shapes)),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 2]},
    )
    for (connections, latency), shape in zip(axes, shapes, strict=True):
        _connections(connections, shape, budget)
        _latency(latency, shape)
    fig.suptitle(f"serverless-pool fleet: {report['server']}", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=72, format="png")
    plt.close(fig)


def _connections(ax: Any, shape: Mapping[str, Any], budget: int) -> None:
    top = budget
    for run in shape["runs"]:
        timeline = run["timeline"]
        colour = _STRATEGY_COLOURS.get(run["strategy"])
        ax.step(timeline["t"], timeline["connections"], where="post", color=colour,
                linewidth=1.2, label=run["label"])  # fmt: skip
        top = max([top, *timeline["connections"]])
    ax.axhline(budget, color="crimson", linestyle="--", linewidth=1, label=f"budget ({budget})")
    ax.set_ylim(0, top * 1.45 + 1)  # room for the legend above the lines
    ax.set_title(shape["title"], fontsize=10, loc="left")
    ax.set_xlabel("seconds since the run's first request", fontsize=8)
    ax.set_ylabel("server connections", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper left", ncol=3, frameon=False)


def _latency(ax: Any, shape: Mapping[str, Any], offset: float = 0.25) -> None:
    from matplotlib import ticker

    runs = shape["runs"]
    for i, run in enumerate(runs):
        for j, kind in enumerate(KINDS):
            data = run["latency_ms"][kind]
            if not data["n"]:
                continue
            x = i + (j - 1) * offset
            colour = _KIND_COLOURS[kind]
            ax.vlines(x, data["p50"], data["p99"], color=colour, linewidth=2)
            ax.plot([x], [data["p50"]], "o", color=colour, markersize=4, label=_KIND_NAMES[kind])
            ax.plot([x], [data["p95"]], "_", color="black", markersize=6)
            ax.plot([x], [data["p99"]], "^", color=colour, markersize=4)
    labels = [f"{_SHORT.get(r['strategy'], r['label'])}\n{r['errors']} failed" for r in runs]
    ax.set_xticks(range(len(runs)), labels, fontsize=7)
    for tick, run in zip(ax.get_xticklabels(), runs, strict=True):
        if run["errors"]:
            tick.set_color("crimson")
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel("ms: p50 ●  p95 –  p99 ▲", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", linewidth=0.3)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 4)  # room for the legend above the points (log scale)
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper center", ncol=3,
              frameon=False)  # fmt: skip
