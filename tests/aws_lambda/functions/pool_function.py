"""A bare WSGI app (no framework) with one pool, served through `make_handler`: the
lightest function that holds a database connection, for shutdown, SnapStart and
Managed Instances tests. Settings come from ``SERVERLESS_POOL_*``.

``REGISTER_EXTENSION=0`` turns the SIGTERM extension off; ``CONNECT_ON_INIT=1``
connects in the init phase; ``/hold?seconds=S`` keeps the connection that long.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from serverless_pool import ServerlessPool
from serverless_pool.aws_lambda import make_handler
from serverless_pool.settings import running_on_managed_instances, workers_per_environment

pool = ServerlessPool()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    with pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        if "seconds" in query:
            time.sleep(float(query["seconds"][0]))
    body = {
        "backend": row[0] if row else None,
        "pid": os.getpid(),
        "stats": pool.stats(),
        "max_size": pool.settings.max_size,
        "ping_after_idle": pool.settings.ping_after_idle,
        "managed": running_on_managed_instances(),
        "workers": workers_per_environment(),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


handler = make_handler(
    app,
    register_extension=os.environ.get("REGISTER_EXTENSION", "1") == "1",
    connect_on_init=os.environ.get("CONNECT_ON_INIT") == "1",
)
