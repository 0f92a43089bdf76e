"""The one seam between serverless-pool and psycopg's internals.

The pool hands out a subclass of `psycopg.Connection`, and a few of its guarantees must
live inside psycopg's execution path: the borrow's first operation sent again only where
the server provably never ran it (`first_operation`), the reset's answer read before the
next borrower sends anything (`reset`), statements bounded by the deadline (`bounded`),
every wait for the server bounded by it (`waiting`), and the Python-side state a borrower
changed put back (`connection`). This package is the only code that imports or touches
psycopg's private names; `PRIVATE_NAMES` lists each, and a test asserts that the
installed psycopg has them all. Everything is chosen by reading flags and the deadline's
context variable: no method is replaced at run time or at import.

The protocol pieces are psycopg-style generators (`psycopg.abc.PQGen`), which a sync
driver (here) or an async one can run.
"""

from __future__ import annotations

from typing import Final

from .connection import Baseline, PooledConnection
from .cursor import (
    PooledClientCursor,
    PooledCursor,
    PooledCursorMixin,
    PooledRawCursor,
    PooledServerCursor,
)

__all__ = [
    "CONNECTION_ATTRIBUTES",
    "CURSOR_ATTRIBUTES",
    "ERROR_ATTRIBUTES",
    "PGCONN_ATTRIBUTES",
    "PREPARED_ATTRIBUTES",
    "PRIVATE_NAMES",
    "Baseline",
    "PooledClientCursor",
    "PooledConnection",
    "PooledCursor",
    "PooledCursorMixin",
    "PooledRawCursor",
    "PooledServerCursor",
]

#: Every private name of psycopg this package relies on, as (module, object, attribute):
#: an attribute of None means the object itself; an attribute set on instances only is
#: checked on a live connection or cursor by the test that pins them.
PRIVATE_NAMES: Final = (
    ("psycopg._connection_base", "BaseConnection", None),
    ("psycopg._connection_base", "BaseConnection", "_notice_handler"),
    ("psycopg._connection_base", "BaseConnection", "_notify_handler"),
    ("psycopg._preparing", "Prepare", None),
    ("psycopg.generators", "execute", None),
    ("psycopg.generators", "fetch_many", None),
    ("psycopg.generators", "send", None),
    ("psycopg", "Connection", "_exec_command"),
    ("psycopg", "Connection", "_start_query"),
    ("psycopg", "Connection", "_set_autocommit_gen"),
    ("psycopg", "Connection", "_set_isolation_level_gen"),
    ("psycopg", "Connection", "_set_read_only_gen"),
    ("psycopg", "Connection", "_set_deferrable_gen"),
    ("psycopg", "Connection", "_check_connection_ok"),
    ("psycopg", "Cursor", "_maybe_prepare_gen"),
    ("psycopg", "Cursor", "_raise_for_result"),
    ("psycopg", "Cursor", "_check_results"),
    ("psycopg", "Cursor", "_set_results"),
    ("psycopg", "Cursor", "_get_prepared"),
    ("psycopg", "Cursor", "_execute_send"),
    ("psycopg", "Cursor", "_send_prepare"),
    ("psycopg", "Cursor", "_send_query_prepared"),
)

#: Attributes psycopg sets on each connection (checked on a live one).
CONNECTION_ATTRIBUTES: Final = (
    "_adapters",
    "_notice_handlers",
    "_notify_handlers",
    "_notifies_backlog",
    "_num_transactions",
    "_pipeline",
    "_prepared",
    "_tpc",
    "_autocommit",
)
#: Attributes psycopg sets on each cursor (checked on a live one).
CURSOR_ATTRIBUTES: Final = ("_conn", "_pgconn", "_query")
#: Attributes psycopg sets on each libpq connection and each error (checked on live ones).
PGCONN_ATTRIBUTES: Final = ("_encoding",)
ERROR_ATTRIBUTES: Final = ("_info", "_encoding")
#: Attributes of psycopg's prepared-statement cache (`conn._prepared`).
PREPARED_ATTRIBUTES: Final = ("_names", "_counts", "_to_flush", "prepared_max", "prepare_threshold")
