"""Connection strings: parsed with libpq's rules, and shown without secrets.

libpq's own parse errors may quote a fragment of the string, which can be the
password, so they are rewritten here before anyone sees them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import SettingsError

__all__ = ["describe_conninfo", "parse_conninfo", "redact"]

#: Connection parameters that may be shown in logs and errors.
_SHOWN = ("host", "hostaddr", "port", "dbname", "user", "sslmode", "application_name")
# Patterns as text: `re` compiles (and caches) them at first use, not at import.
_OPTION_NAME = r'invalid (?:connection option|URI query parameter):? ?"([^"]*)"'


def parse_conninfo(conninfo: str) -> dict[str, object]:
    """Parse a key/value string or a URL; errors never repeat the string's content."""
    if not isinstance(conninfo, str):
        raise SettingsError(f"conninfo: expected a string, got {type(conninfo).__name__}")
    # The error is raised after the `except` block, so that libpq's own message, which
    # may quote the password, is not kept as the new error's __context__ either.
    refused: str
    try:
        params: dict[str, object] = dict(conninfo_to_dict(conninfo))
    except psycopg.ProgrammingError as err:
        refused = f"conninfo: {redact(str(err))}"
    except UnicodeDecodeError:
        # libpq decodes a URL's %XX escapes; psycopg then fails on bytes that are not UTF-8.
        refused = (
            "conninfo: a %-escape in the URL does not decode to UTF-8 text"
            " (the connection string is not shown: it may hold a password)"
        )
    else:
        _check_values(params, conninfo)
        return params
    raise SettingsError(refused)


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_NOT_SHOWN = "(the value is not shown: it may hold a password)"
# "host= password=x" parses as host "password=x" (libpq skips blanks after "=").
_SWALLOWED = r"[a-z_]+="


_URL_SCHEMES = ("postgresql://", "postgres://")
# Parts of a URL that an unescaped '@', '/' in the user information spills into.
_SPILLED_INTO = ("host", "hostaddr", "port", "dbname", "user")


def _check_values(params: Mapping[str, object], conninfo: str = "") -> None:
    """Reject now the values libpq would reject at connect time.

    libpq quotes the bad value in its message, and ``port= password=x`` parses as a
    port of ``password=x``: its message would show the password. In a URL, an '@' or a
    '/' in the password ends it early, and the rest becomes the host or the database
    name, which errors and ``repr()`` show.
    """
    if conninfo.lstrip().startswith(_URL_SCHEMES):
        for name in _SPILLED_INTO:
            if "@" in str(params.get(name) or ""):
                raise SettingsError(
                    "conninfo: the URL's user name or password holds a character that ends"
                    " it early; percent-encode '@' as %40, '/' as %2F, ':' in the user name"
                    f" as %3A {_NOT_SHOWN}"
                )
    for name, value in params.items():
        if name != "password" and isinstance(value, str) and re.match(_SWALLOWED, value):
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
    option = re.search(_OPTION_NAME, message)
    if option:
        # The unknown name may be the second half of a password with a space in it:
        # only a known parameter it resembles is named.
        import difflib  # only for this message: not worth its import time at start

        close = difflib.get_close_matches(option.group(1), _keywords(), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"a parameter name libpq does not know{hint}; a value with spaces must be"
            f" quoted, as in password='two words' {_NOT_SHOWN}"
        )
    redacted = re.sub(r'"[^"]*"', '"…"', message)
    return f"{redacted} (the connection string is not shown: it may hold a password)"


@cache
def _keywords() -> tuple[str, ...]:
    """libpq's connection parameter names."""
    return tuple(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def describe_conninfo(conninfo: str) -> str:
    """The connection target as ``host=... port=... dbname=... user=...``, no secrets."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<invalid conninfo>"
    shown = {k: params[k] for k in _SHOWN if params.get(k) not in (None, "")}
    return make_conninfo("", **shown) if shown else "<default libpq target>"
