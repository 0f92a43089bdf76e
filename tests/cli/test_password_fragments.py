"""A password that breaks the connection string's syntax never shows, not even in part.

A raw '@' in a URL's user information, a space or a quote in a key/value string, a
backslash, a non-ASCII letter: libpq then reads part of the password as something else
(a host, an option's name, the rest of a quoted value) and its error messages quote what
they could not parse. Each shape is tried in every form a user writes it (URL and
key/value, raw, quoted, correctly escaped, and as the ``password=`` argument) against a
real server whose role has exactly that password, and every message, ``repr()``, stats,
log line and the ``serverless-pool check`` command's output is searched for each half of
the password.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from cli_subprocess import run_cli

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import APP_DATABASE, PostgresServer

# Two halves no other text contains, around the character that breaks the syntax.
FIRST, SECOND = "Alpha7xq", "Bravo8yz"
SHAPES = {
    "raw @": "@",
    "space": " ",
    "single quote": "'",
    "backslash": "\\",
    "non-ASCII": "Ä",
    "@ and slash": "@/",
    "quote and space": "' ",
}


@pytest.fixture(params=list(SHAPES), ids=list(SHAPES))
def role(request: pytest.FixtureRequest, postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    """A role whose password has the shape's characters between the two halves."""
    password = FIRST + SHAPES[request.param] + SECOND
    name = f"frag_{list(SHAPES).index(request.param)}"
    with postgres.superuser_connection() as admin:
        admin.execute(f"DROP ROLE IF EXISTS {name}")
        admin.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Literal(password)
            )
        )
    yield name, password
    with postgres.superuser_connection() as admin:
        admin.execute(f"DROP ROLE IF EXISTS {name}")


def _forms(postgres: PostgresServer, user: str, password: str) -> dict[str, tuple[str, dict]]:
    """Connection strings (and keyword arguments) as users write them, right and wrong."""
    host, port, db = postgres.host, postgres.port, APP_DATABASE
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return {
        "raw URL": (f"postgresql://{user}:{password}@{host}:{port}/{db}", {}),
        "raw key/value": (
            f"host={host} port={port} dbname={db} user={user} password={password}",
            {},
        ),
        "quoted key/value": (
            f"host={host} port={port} dbname={db} user={user} password='{password}'",
            {},
        ),
        "escaped URL": (f"postgresql://{user}:{quote(password, safe='')}@{host}:{port}/{db}", {}),
        "escaped key/value": (
            f"host={host} port={port} dbname={db} user={user} password='{escaped}'",
            {},
        ),
        "password argument": (
            f"host={host} port={port} dbname={db} user={user}",
            {"password": password},
        ),
    }


def _what_the_user_sees(conninfo: str, kwargs: dict, caplog: pytest.LogCaptureFixture) -> str:
    """Everything the pool says about this connection string: errors, repr, stats, logs."""
    seen: list[str] = []
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        try:
            pool = ServerlessPool(conninfo, acquire_timeout=3, environ={}, **kwargs)
        except Exception as err:
            seen += [str(err), repr(err), str(err.__cause__), str(err.__context__)]
        else:
            seen.append(repr(pool))
            try:
                with pool.connection() as conn:
                    seen.append(repr(conn))
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                    seen.append("connected")
            except Exception as err:
                seen += [str(err), repr(err), str(err.__cause__), str(err.__context__)]
            seen += [repr(pool), str(pool.stats())]
            pool.close()
    for record in caplog.records:
        seen.append(record.getMessage())
        if record.exc_info:
            seen.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(seen)


def test_no_part_of_a_malformed_password_appears_anywhere(
    role: tuple[str, str], postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = role
    forms = _forms(postgres, user, password)
    for form, (conninfo, kwargs) in forms.items():
        shown = _what_the_user_sees(conninfo, kwargs, caplog)
        for fragment in (FIRST, SECOND, password):
            assert fragment not in shown, f"{form}: {fragment!r} shown in:\n{shown}"
        if form.startswith(("escaped", "password argument")):
            # Written correctly, the password works: the searched text is the real thing.
            assert "connected" in shown, f"{form}:\n{shown}"
        if not kwargs:
            result = run_cli("check", "--url", conninfo)
            for fragment in (FIRST, SECOND, password):
                assert fragment not in result.output, f"{form}: CLI showed {fragment!r}"
            if form.startswith("escaped"):
                assert result.code == 0, result.output
