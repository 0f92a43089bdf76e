"""Connection strings: parsed with libpq's rules, and shown without secrets.

libpq's own parse errors may quote a fragment of the string, which can be the
password, so they are rewritten here before anyone sees them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import SettingsError

__all__ = ["describe_conninfo", "parse_conninfo", "redact"]

#: Connection parameters that may be shown in logs and errors.
_SHOWN = ("host", "hostaddr", "port", "dbname", "user", "sslmode", "application_name")
_OPTION_NAME = re.compile(r'invalid (?:connection option|URI query parameter):? ?"([a-z_]+)"')


def parse_conninfo(conninfo: str) -> dict[str, object]:
    """Parse a key/value string or a URL; errors never repeat the string's content."""
    if not isinstance(conninfo, str):
        raise SettingsError(f"conninfo: expected a string, got {type(conninfo).__name__}")
    try:
        params: dict[str, object] = dict(conninfo_to_dict(conninfo))
    except psycopg.ProgrammingError as err:
        raise SettingsError(f"conninfo: {redact(str(err))}") from None
    except UnicodeDecodeError:
        # libpq decodes a URL's %XX escapes; psycopg then fails on bytes that are not UTF-8.
        raise SettingsError(
            "conninfo: a %-escape in the URL does not decode to UTF-8 text"
            " (the connection string is not shown: it may hold a password)"
        ) from None
    _check_values(params)
    return params


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_NOT_SHOWN = "(the value is not shown: it may hold a password)"
# "host= password=x" parses as host "password=x" (libpq skips blanks after "=").
_SWALLOWED = re.compile(r"[a-z_]+=")


def _check_values(params: Mapping[str, object]) -> None:
    """Reject now the values libpq would reject at connect time.

    libpq quotes the bad value in its message, and ``port= password=x`` parses as a
    port of ``password=x``: its message would show the password.
    """
    for name, value in params.items():
        if name != "password" and isinstance(value, str) and _SWALLOWED.match(value):
            raise SettingsError(
                f"conninfo: {name} has an empty value, so it took the next parameter as its"
                f" value; write {name}='' or remove it {_NOT_SHOWN}"
            )
    port = params.get("port")
    if port not in (None, ""):
        for item in str(port).split(","):
            if item and not (item.isdigit() and 1 <= int(item) <= 65535):
                raise SettingsError(f"conninfo: port must be a number from 1 to 65535 {_NOT_SHOWN}")
    timeout = params.get("connect_timeout")
    if timeout not in (None, "") and not str(timeout).strip().lstrip("+-").isdigit():
        raise SettingsError(
            f"conninfo: connect_timeout must be a whole number of seconds {_NOT_SHOWN}"
        )
    sslmode = params.get("sslmode")
    if sslmode not in (None, "") and sslmode not in _SSLMODES:
        raise SettingsError(f"conninfo: sslmode must be one of {', '.join(_SSLMODES)} {_NOT_SHOWN}")


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
