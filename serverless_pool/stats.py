"""Pool counters: plain integers bumped under the pool's lock, cheap enough to leave on.

Keys are named constants so that integrations, metrics and tests agree on spelling.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

__all__ = [
    "BORROWS",
    "CONNECTIONS_CLOSED",
    "CONNECTIONS_OPENED",
    "CONNECT_ATTEMPTS",
    "CONNECT_ERRORS",
    "CONNECT_RETRIES",
    "PINGS",
    "READ_ONLY_ERRORS",
    "REPLACED_PREFIX",
    "RESETS",
    "RETURNS",
    "REUSED",
    "ROLLBACKS",
    "STATEMENT_RETRIES",
    "TIMEOUTS",
    "WAITS",
    "WAIT_MS",
    "PoolStats",
]

BORROWS: Final = "borrows"
#: connections given back (``borrows - returns`` are on loan)
RETURNS: Final = "returns"
REUSED: Final = "reused"
CONNECTIONS_OPENED: Final = "connections_opened"
CONNECTIONS_CLOSED: Final = "connections_closed"
CONNECT_ATTEMPTS: Final = "connect_attempts"
CONNECT_RETRIES: Final = "connect_retries"
CONNECT_ERRORS: Final = "connect_errors"
WAITS: Final = "waits"
WAIT_MS: Final = "wait_ms"
TIMEOUTS: Final = "timeouts"
PINGS: Final = "pings"
RESETS: Final = "resets"
ROLLBACKS: Final = "rollbacks"
STATEMENT_RETRIES: Final = "statement_retries"
#: writes that found the server read-only (25006); each closed its connection
READ_ONLY_ERRORS: Final = "read_only_errors"
#: ``replaced_<reason>`` counts connections thrown away, by reason
REPLACED_PREFIX: Final = "replaced_"

#: Why a connection was thrown away.
CLOSED_BY_SERVER: Final = "closed_by_server"
PING_FAILED: Final = "ping_failed"
EXPIRED: Final = "expired"
IDLE_TOO_LONG: Final = "idle_too_long"
#: idle for nearly the idle_session_timeout the pool gave the server: closed first
SERVER_IDLE_TIMEOUT: Final = "server_idle_timeout"
BAD_STATE: Final = "bad_state"
RESET_FAILED: Final = "reset_failed"
DEAD_ON_FIRST_STATEMENT: Final = "dead_on_first_statement"
REPLACE_REASONS: Final = (
    CLOSED_BY_SERVER,
    PING_FAILED,
    EXPIRED,
    IDLE_TOO_LONG,
    SERVER_IDLE_TIMEOUT,
    BAD_STATE,
    RESET_FAILED,
    DEAD_ON_FIRST_STATEMENT,
)


class PoolStats:
    """Counters since the pool was made (or since the last `pop()`)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        self._counts[key] += amount

    def replaced(self, reason: str) -> None:
        self._counts[REPLACED_PREFIX + reason] += 1

    def get(self) -> dict[str, int]:
        return dict(self._counts)

    def pop(self) -> dict[str, int]:
        counts = dict(self._counts)
        self._counts.clear()
        return counts
