"""One CloudWatch embedded-metric-format (EMF) line per invocation.

Lambda sends stdout to CloudWatch Logs, which turns a JSON line with an ``_aws`` key
into metrics without any API call or agent: the cheapest way to see pool hits, new and
replaced connections and wait time per function.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Final

from .. import stats as st

__all__ = ["METRICS", "InvocationCounts", "counts_between", "emf_line"]

#: Metric name, unit.
METRICS: Final = (
    ("Borrows", "Count"),
    ("PoolHits", "Count"),
    ("NewConnections", "Count"),
    ("ReplacedConnections", "Count"),
    ("LeakedConnections", "Count"),
    ("WaitTime", "Milliseconds"),
    ("ColdStart", "Count"),
)

InvocationCounts = dict[str, int]


def counts_between(before: Mapping[str, int], after: Mapping[str, int]) -> InvocationCounts:
    """The invocation's metrics from two `ServerlessPool.stats()` snapshots."""

    def delta(key: str) -> int:
        return max(0, after.get(key, 0) - before.get(key, 0))

    replaced = sum(
        delta(key) for key in set(after) | set(before) if key.startswith(st.REPLACED_PREFIX)
    )
    return {
        "Borrows": delta(st.BORROWS),
        "PoolHits": delta(st.REUSED),
        "NewConnections": delta(st.CONNECTIONS_OPENED),
        "ReplacedConnections": replaced,
        "WaitTime": delta(st.WAIT_MS),
    }


def emf_line(
    namespace: str,
    function_name: str,
    counts: Mapping[str, int],
    *,
    pools: Sequence[str] = (),
    request_id: str = "",
    timestamp_ms: int | None = None,
) -> str:
    """A single-line EMF document with the given metric values."""
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    document: dict[str, object] = {
        "_aws": {
            "Timestamp": stamp,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit in METRICS],
                }
            ],
        },
        "FunctionName": function_name,
        "Pools": list(pools),
        "RequestId": request_id,
    }
    for name, _unit in METRICS:
        document[name] = int(counts.get(name, 0))
    return json.dumps(document, separators=(",", ":"))
