"""URLs of the Django tests: the example shop's, plus djtest_views."""

from __future__ import annotations

import djtest_views as v
from django.urls import include, path

urlpatterns = [
    path("", include("shop.urls")),
    path("t/pid", v.backend_pid),
    path("t/one", v.select_one),
    path("t/setting", v.setting),
    path("t/raises", v.raises),
    path("t/atomic-raises", v.atomic_raises),
    path("t/on-commit", v.on_commit),
    path("t/savepoints", v.savepoints),
    path("t/iterate", v.iterate),
    path("t/stream", v.stream),
    path("t/two-databases", v.two_databases),
    path("t/order-then-fail", v.place_order_atomic),
    path("t/async-count", v.async_count),
    path("t/sync-slow", v.sync_slow),
    path("t/async-raises", v.async_raises),
    path("t/async-mixed", v.async_mixed),
    path("t/deadline-bounds", v.deadline_bounds),
    path("t/deadline-sleep", v.deadline_sleep),
    path("t/worker-in-transaction", v.backend_in_transaction),
]
