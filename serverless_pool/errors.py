"""Errors raised by serverless-pool.

Pool errors subclass psycopg's `OperationalError`, so code that already handles
database outages keeps working. Configuration errors subclass `ValueError` and always
name the setting (and where it was read from) that is at fault.
"""

from __future__ import annotations

import psycopg

__all__ = [
    "CommitOutcomeUnknown",
    "ConnectionFailed",
    "CredentialsUnavailable",
    "DeadlineExceeded",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "SettingsError",
    "StatementOutcomeUnknown",
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


class CredentialsUnavailable(PoolError):
    """The credentials for a new connection could not be had (no connection was tried).

    Raised when a credential provider (a Secrets Manager secret, an RDS IAM token) fails:
    the secret does not exist or is not readable by the function's role, it is not in
    RDS's JSON format, AWS could not be reached in time, or boto3 is missing. The
    message names the provider and the cause; it never contains a secret value.
    """


class DeadlineExceeded(PoolError):
    """The server did not answer before the deadline of the invocation.

    Raised from a statement (or a commit, a fetch...) that was waiting for the server
    when the deadline (`serverless_pool.deadline`) passed: the server stopped answering
    (a network partition, a frozen process, a proxy that stopped forwarding) or is too
    slow. The statement was cancelled on the server where possible and the connection
    was closed, so it is never reused. The statement may or may not have run.
    """


class CommitOutcomeUnknown(PoolError):
    """The connection was lost after ``COMMIT`` was sent and before the server answered.

    The transaction may have been committed or rolled back: the client cannot know.
    The pool never retries it. Decide in the application: check whether the
    transaction's effects are there (e.g. by an idempotency key) before doing it again.
    The cause (the lost connection, or `DeadlineExceeded`) is chained as ``__cause__``.
    """


class StatementOutcomeUnknown(PoolError):
    """The server session ended while the borrow's first statement was in flight, in
    autocommit mode: the statement may or may not have run (and committed).

    The pool sends a borrow's first statement again on a fresh session only where the
    server provably never ran it (the session had ended before it was sent, or an
    idle-session timeout ended it); a goodbye that answers the statement proves nothing
    (the simple query protocol commits before it answers, a procedure may commit, a
    backend ended while waiting for a synchronous standby has committed locally). So
    this is raised instead, never a second run: decide in the application, e.g. by an
    idempotency key. The instance is also of the class psycopg raised (for example
    `psycopg.errors.AdminShutdown`, with its ``sqlstate`` and ``diag``), which is
    chained as ``__cause__``.
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
