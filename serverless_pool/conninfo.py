"""Connection strings: parsed with libpq's rules, and shown without secrets.

libpq's own parse errors may quote a fragment of the string, which can be the
password, so they are rewritten here before anyone sees them.
"""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import SettingsError

__all__ = ["describe_conninfo", "parse_conninfo", "redact"]

#: Connection parameters that may be shown in logs and errors.
_SHOWN = ("host", "hostaddr", "port", "dbname", "user", "sslmode", "application_name")
_OPTION_NAME = re.compile(r'invalid (?:connection option|URI query parameter): ?"([a-z_]+)"')


def parse_conninfo(conninfo: str) -> dict[str, object]:
    """Parse a key/value string or a URL; errors never repeat the string's content."""
    if not isinstance(conninfo, str):
        raise SettingsError(f"conninfo: expected a string, got {type(conninfo).__name__}")
    try:
        return dict(conninfo_to_dict(conninfo))
    except psycopg.ProgrammingError as err:
        raise SettingsError(f"conninfo: {redact(str(err))}") from None


def redact(message: str) -> str:
    """Remove quoted fragments of a connection string from a libpq error message."""
    message = " ".join(message.split())
    option = _OPTION_NAME.search(message)
    if option:
        return f"invalid connection option {option.group(1)!r}"
    redacted = re.sub(r'"[^"]*"', '"…"', message)
    return f"{redacted} (the connection string is not shown: it may hold a password)"


def describe_conninfo(conninfo: str) -> str:
    """The connection target as ``host=... port=... dbname=... user=...``, no secrets."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<invalid conninfo>"
    shown = {k: params[k] for k in _SHOWN if params.get(k) not in (None, "")}
    return make_conninfo("", **shown) if shown else "<default libpq target>"
