"""Warm-up: pings that keep an instance alive without reaching the app, and connections
opened ahead of the first request.

Two shapes of ping are recognised: an EventBridge (CloudWatch Events) scheduled event,
the usual way to ping a function every few minutes, and a payload carrying a marker
key, for pingers that invoke the function directly.

Connecting ahead (`connect_ahead`, in the init phase with ``connect_on_init`` or on a
ping with ``warmup_connect``) opens one connection in every live pool, and first builds
the pools integrations create lazily: Django's, one per database alias using the
serverless-pool ``ENGINE``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import psycopg

from .. import lifecycle

__all__ = ["DEFAULT_MARKER", "connect_ahead", "idle_connections", "is_warmup"]

logger = logging.getLogger("serverless_pool")

DEFAULT_MARKER = "serverless-pool-warmup"
_DJANGO_ENGINE: Final = "django_serverless_pool.backends.postgresql"


def is_warmup(event: object, marker: str | None = DEFAULT_MARKER) -> bool:
    """Whether `event` is a warm-up ping rather than a request for the app."""
    if not isinstance(event, dict):
        return False
    payload: dict[str, Any] = event
    if payload.get("source") == "aws.events" and payload.get("detail-type") == "Scheduled Event":
        return True
    return marker is not None and bool(payload.get(marker))


def idle_connections() -> int:
    """Connections that sit idle in the live pools of this process, ready for a request."""
    return sum(pool.stats()["pool_available"] for pool in lifecycle.live_pools() if not pool.closed)


def connect_ahead() -> int:
    """Open one connection in every live pool (building Django's first); a database
    that is down is logged, not raised. Returns the connections then idle.

    Failing here would fail the init phase (or the ping) and Lambda would retry init
    over and over; the first request will try again and report a real error.
    """
    _build_django_pools()
    for pool in lifecycle.live_pools():
        if pool.closed:
            continue
        try:
            pool.warm(1)
        except psycopg.Error as err:
            logger.warning("pool %r: could not connect ahead of use: %s", pool.name, err)
    return idle_connections()


def _build_django_pools() -> None:
    """Django builds its pools at the first query of each alias; build them now."""
    if "django" not in sys.modules:
        return
    from django.apps import apps
    from django.conf import settings

    if not settings.configured or not apps.ready:
        return
    if not any(db.get("ENGINE") == _DJANGO_ENGINE for db in settings.DATABASES.values()):
        return
    from django_serverless_pool.backends.postgresql.pools import build_pools

    build_pools()
