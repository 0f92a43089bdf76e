"""The function every instance of the fleet runs: a WSGI app served by `make_handler`.

The emulator starts it as Lambda does, ``python -m awslambdaric
serverless_pool.fleet.function.handler``; this module's import is the instance's init
phase (for SnapStart, the part before the snapshot). Each request does its database
work (one statement of ``FLEET_DB_SECONDS``) the strategy's way, then
``FLEET_APP_SECONDS`` of other work holding no transaction, and answers JSON: the server
session that ran the statement, the connections this instance opened so far, and how
long the instance had been idle (frozen, on-demand) before the request. A failed
request answers 503 with a short error kind, as an app's error handler would.

Configuration, from the environment the simulation gives the function:
``FLEET_STRATEGY`` (see `serverless_pool.fleet.strategies`), ``FLEET_DATABASE_URL``,
``FLEET_DB_SECONDS``, ``FLEET_APP_SECONDS``, ``FLEET_EXTENSION`` (``1``: `make_handler`
registers its extension, the default; ``0``: it does not), and the pool's own
``SERVERLESS_POOL_*`` settings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..aws_lambda import make_handler
from .strategies import error_kind, make_access

__all__ = ["app", "handler"]

_STRATEGY = os.environ["FLEET_STRATEGY"]
_DB_SECONDS = float(os.environ.get("FLEET_DB_SECONDS", "0.01"))
_APP_SECONDS = float(os.environ.get("FLEET_APP_SECONDS", "0"))
_access = make_access(_STRATEGY, os.environ["FLEET_DATABASE_URL"])
_last_end: float | None = None


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """One request of the fleet (any method, any path)."""
    global _last_end
    began = time.monotonic()
    # CLOCK_MONOTONIC keeps counting while the process is stopped: this is the freeze.
    idle = None if _last_end is None else began - _last_end
    body: dict[str, Any] = {"idle": idle}
    status = "200 OK"
    try:
        body["backend"] = _access.run(_DB_SECONDS)
    except Exception as err:  # noqa: BLE001 (a failed request is an answer here)
        status = "503 Service Unavailable"
        body["error"] = error_kind(err)
    else:
        time.sleep(_APP_SECONDS)
    body["connects"] = _access.connects()
    _last_end = time.monotonic()
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


handler = make_handler(app, register_extension=os.environ.get("FLEET_EXTENSION", "1") == "1")
