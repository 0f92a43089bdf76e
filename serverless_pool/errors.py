"""Errors raised by serverless-pool.

Pool errors subclass psycopg's `OperationalError`, so code that already handles
database outages keeps working. Configuration errors subclass `ValueError` and always
name the setting (and where it was read from) that is at fault.
"""

from __future__ import annotations

import psycopg

__all__ = [
    "ConnectionFailed",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "SettingsError",
    "UnsupportedEvent",
]


class PoolError(psycopg.OperationalError):
    """Base class for the errors the pool raises at run time."""


class PoolClosed(PoolError):
    """The pool was closed; it hands out no more connections."""


class PoolTimeout(PoolError):
    """No connection could be had before the deadline.

    Raised when every connection is in use for longer than the acquire timeout, or when
    the server kept refusing new connections (too many clients, starting up) until the
    deadline passed.
    """


class ConnectionFailed(PoolError):
    """The server refused a new connection for a reason retrying cannot fix.

    Wrong password, unknown database or role, unreachable host: these fail at once,
    without a retry. The message says which, and never contains the password.
    """


class SettingsError(ValueError):
    """A setting has an unknown name, a wrong type or a value out of range."""


class UnsupportedEvent(ValueError):
    """A Lambda event `make_handler` does not serve.

    Raised before any app or adapter sees the event: not an HTTP request from a
    supported source (an SQS batch, a WebSocket message, an authorizer call, ``None``,
    a string...), or a malformed one (a body marked base64 that is not). The message
    names what was received (its kind, or its keys; never its values) and what is
    supported. Not a database error, hence a `ValueError`.
    """
