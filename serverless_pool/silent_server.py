"""Bounded waits on a server that stops answering.

A server can go silent mid-statement: a network partition, a failover, a proxy that
stopped forwarding, a frozen process. Nothing closes the connection, and TCP's defaults
keep a client waiting for many minutes, so a request would hang until Lambda kills it.
Two bounds, each for what the other cannot see:

- In the kernel, at connect time (`tcp_params`): ``tcp_user_timeout`` and keepalives,
  from the ``tcp_timeout`` setting, end a connection whose server stops acknowledging
  packets. They cannot fire while the server's machine still acknowledges (a stopped
  server process, a relay that stops forwarding but keeps its sockets open).
- In the client, while a deadline is active (`serverless_pool.deadline`, set by
  ``make_handler`` for every invocation): a wait for the server that runs past the
  deadline gives up (`serverless_pool._psycopg.waiting`, where the connection's one
  ``wait()`` goes when a deadline is active). The statement is cancelled on the
  server where that can be done quickly, the connection is closed so it is never
  reused, and `DeadlineExceeded` is raised. Without a deadline nothing changes:
  psycopg waits as it always does.

The client bound fires `GRACE` after the deadline (so that a server-side
``statement_timeout`` set to the same deadline reports first), noticed within one
`TICK` of silence, and the cancel request may take up to `CANCEL_TIMEOUT`: the error
comes at most about 0.25 s after the deadline, inside ``make_handler``'s default
``deadline_margin`` of 0.5 s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._psycopg.waiting import CANCEL_TIMEOUT, GRACE

if TYPE_CHECKING:
    from .settings import PoolSettings

__all__ = ["CANCEL_TIMEOUT", "GRACE", "tcp_params"]


def tcp_params(settings: PoolSettings, params: Mapping[str, object]) -> dict[str, object]:
    """libpq keepalive and ``tcp_user_timeout`` parameters from the ``tcp_timeout`` setting.

    Parameters the connection string sets are left alone. Keepalive probes start after
    half the timeout of idleness and continue until the timeout is spent, so a dead peer
    is noticed within about `tcp_timeout` seconds whether data was in flight or not.
    """
    seconds = settings.tcp_timeout
    if not seconds:
        return {}
    idle = max(1, math.ceil(seconds / 2))
    interval = max(1, math.ceil(seconds / 10))
    wanted: dict[str, object] = {
        "tcp_user_timeout": max(1, round(seconds * 1000)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": max(1, math.ceil(max(0.0, seconds - idle) / interval)),
    }
    return {key: value for key, value in wanted.items() if params.get(key) in (None, "")}
