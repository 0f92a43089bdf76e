"""Bad input gets a clear error that names what is wrong, and never the password.

Configuration mistakes fail when the pool is made. Connection failures a retry cannot
fix (wrong password, unknown database or role, nothing listening, unknown host) fail
at the first borrow, after exactly one attempt, with a message that says which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest

from serverless_pool import ServerlessPool
from serverless_pool.errors import ConnectionFailed, PoolTimeout, SettingsError
from serverless_pool.testing.postgres import PostgresServer, free_port

SECRET = "Sup3r-s3cret-pw"


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        (f"host=127.0.0.1 password={SECRET} bogus=1", "a parameter name libpq does not know"),
        (f"postgresql://app:{SECRET}@127.0.0.1/app?bogus=1", "a parameter name libpq does not"),
        (f"host='unterminated password={SECRET}", "unterminated quoted string"),
        (f"postgresql://app:{SECRET}@127.0.0.1:notaport/app", "port must be a number"),
        (f"host=127.0.0.1 port=70000 password={SECRET}", "port must be a number"),
        (f"host=127.0.0.1 port= password={SECRET}", "port has an empty value"),
        (f"host= password={SECRET}", "host has an empty value"),
        (f"host=127.0.0.1 connect_timeout=soon password={SECRET}", "connect_timeout must be"),
        (f"host=127.0.0.1 sslmode=strict password={SECRET}", "sslmode must be one of"),
        # Found by the property test: %80 decodes to a byte that is not UTF-8.
        (f"postgresql://app:{SECRET}@127.0.0.1/%80", "does not decode to UTF-8"),
        (f"postgresql://app:{SECRET}@127.0.0.1/%zz", "invalid percent-encoded token"),
    ],
)
def test_an_invalid_conninfo_is_refused_at_once_without_showing_it(
    conninfo: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        ServerlessPool(conninfo, environ={})
    message = str(caught.value)
    assert message.startswith("conninfo: ")
    assert expected in message
    assert SECRET not in message
    assert "bogus" not in message
    assert caught.value.__cause__ is None


def test_an_invalid_conninfo_from_a_callable_is_refused_at_the_first_borrow() -> None:
    pool = ServerlessPool(lambda: f"host=127.0.0.1 port=x password={SECRET}", environ={})
    try:
        with (
            pytest.raises(SettingsError, match="port must be a number") as caught,
            pool.connection(),
        ):
            pass
    finally:
        pool.close()
    assert SECRET not in str(caught.value)
    assert pool.stats().get("connect_attempts", 0) <= 1


@pytest.mark.parametrize(
    ("overrides", "environ", "expected"),
    [
        ({"max_sise": 2}, {}, "unknown keyword argument 'max_sise'; did you mean 'max_size'?"),
        ({"pool_size": 2}, {}, "unknown keyword argument 'pool_size'"),
        ({"max_size": 0}, {}, "keyword argument max_size: must be at least 1, got 0"),
        ({"max_size": -5}, {}, "keyword argument max_size: must be at least 1, got -5"),
        ({"min_size": -1}, {}, "keyword argument min_size: must be at least 0"),
        ({"max_size": "two"}, {}, "keyword argument max_size: expected a whole number, got 'two'"),
        ({"max_size": 2.5}, {}, "keyword argument max_size: expected a whole number"),
        ({"max_size": True}, {}, "max_size: expected a whole number, not a boolean"),
        ({"acquire_timeout": -1}, {}, "acquire_timeout: must be more than 0"),
        ({"acquire_timeout": float("inf")}, {}, "acquire_timeout: must be a finite number"),
        ({"ping_timeout": "1s"}, {}, "ping_timeout: expected a number of seconds, got '1s'"),
        ({"autocommit": "maybe"}, {}, "autocommit: expected true or false"),
        ({"proxy_mode": "pgbouncer"}, {}, "proxy_mode: expected one of 'direct'"),
        ({"reset_on_return": 1}, {}, "reset_on_return: expected one of 'always', 'never'"),
        ({"reset_on_return": "auto"}, {}, "'auto' is no longer a mode"),
        ({"application_name": ""}, {}, "application_name: expected a non-empty text"),
        (
            {"min_size": 5, "max_size": 2},
            {},
            "min_size (5, keyword argument min_size) must not exceed"
            " max_size (2, keyword argument max_size)",
        ),
        (
            {"min_size": 5},
            {"SERVERLESS_POOL_MAX_SIZE": "2"},
            "min_size (5, keyword argument min_size) must not exceed"
            " max_size (2, environment variable SERVERLESS_POOL_MAX_SIZE)",
        ),
        (
            {},
            {"SERVERLESS_POOL_RETRY_BACKOFF": "3"},
            "retry_backoff (3.0, environment variable SERVERLESS_POOL_RETRY_BACKOFF) must not"
            " exceed retry_backoff_max (1.0, the default)",
        ),
        (
            {"proxy_mode": "rds-proxy"},
            {"SERVERLESS_POOL_RESET_ON_RETURN": "always"},
            "reset_on_return='always' (environment variable SERVERLESS_POOL_RESET_ON_RETURN)"
            " cannot be used with proxy_mode='rds-proxy' (keyword argument proxy_mode)",
        ),
        # Values the schema accepts must work at run time: bounded to what poll() and
        # PostgreSQL's timeouts take (2**31 - 1 ms).
        ({"acquire_timeout": 1e20}, {}, "acquire_timeout: must be at most 2.14748e+06 seconds"),
        ({"ping_timeout": 1e20}, {}, "ping_timeout: must be at most 2.14748e+06 seconds"),
        ({"statement_timeout": 2147484}, {}, "statement_timeout: must be at most"),
        ({"idle_session_timeout": 10**9}, {}, "idle_session_timeout: must be at most"),
        ({"max_size": 10**9}, {}, "keyword argument max_size: must be at most 100,000"),
        # A misspelt variable would leave the setting it meant at its default, silently.
        (
            {},
            {"SERVERLESS_POOL_MAX_SISE": "2"},
            "unknown environment variable SERVERLESS_POOL_MAX_SISE;"
            " did you mean SERVERLESS_POOL_MAX_SIZE?",
        ),
        ({}, {"SERVERLESS_POOL_MAX_SIZE": ""}, "SERVERLESS_POOL_MAX_SIZE is empty"),
        ({}, {"SERVERLESS_POOL_MAX_SIZE": "  "}, "SERVERLESS_POOL_MAX_SIZE is empty"),
        ({}, {"SERVERLESS_POOL_MAX_SIZE": "-3"}, "environment variable SERVERLESS_POOL_MAX_SIZE"),
        ({}, {"SERVERLESS_POOL_PROXY_MODE": "rds"}, "SERVERLESS_POOL_PROXY_MODE: expected one of"),
        ({}, {"SERVERLESS_POOL_AUTOCOMMIT": "si"}, "SERVERLESS_POOL_AUTOCOMMIT: expected true"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    overrides: dict[str, object], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        ServerlessPool("host=127.0.0.1", environ=environ, **overrides)
    assert expected in str(caught.value)


def test_the_largest_values_the_schema_accepts_work_at_run_time(
    postgres: PostgresServer,
) -> None:
    from serverless_pool.settings import MAX_SECONDS

    largest = {
        name: MAX_SECONDS
        for name in (
            "acquire_timeout",
            "ping_timeout",
            "max_idle",
            "max_lifetime",
            "ping_after_idle",
            "statement_timeout",
            "idle_session_timeout",
            "idle_in_transaction_session_timeout",
        )
    }
    with ServerlessPool(postgres.conninfo(), max_size=1, environ={}, **largest) as pool:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("2147483647ms",)
        with pool.connection() as held:
            # A waiting borrow with the largest wait must wait, not overflow.
            with pytest.raises(PoolTimeout):
                pool.acquire(timeout=0.05)
            assert held.execute("SELECT 1").fetchone() == (1,)


def test_no_conninfo_and_an_empty_environment_variable_say_where_to_put_one() -> None:
    for environ in ({}, {"SERVERLESS_POOL_DATABASE_URL": ""}):
        with pytest.raises(SettingsError, match="SERVERLESS_POOL_DATABASE_URL"):
            ServerlessPool(environ=environ)


@pytest.fixture(scope="module")
def role_with_secret(postgres: PostgresServer) -> Iterator[str]:
    """A role whose real password is SECRET, so a failure after a correct password
    (an unknown database) is tested with the secret on the wire too."""
    postgres.execute(f"CREATE ROLE bad_input_role LOGIN PASSWORD '{SECRET}'")
    yield "bad_input_role"
    postgres.execute("DROP ROLE bad_input_role")


@pytest.mark.parametrize(
    ("target", "how", "expected"),
    [
        ({"user": "app"}, "conninfo", "wrong password or user"),
        ({"user": "app"}, "string", "wrong password or user"),
        ({"user": "app"}, "callable", "wrong password or user"),
        ({"user": "no_such_role"}, "conninfo", "wrong password or user"),
        ({"user": "ROLE", "dbname": "no_such_db"}, "conninfo", "unknown database"),
        ({"user": "ROLE", "dbname": "no_such_db"}, "callable", "unknown database"),
        ({"user": "ROLE", "port": "UNUSED"}, "conninfo", "server unreachable: nothing listens"),
        ({"user": "ROLE", "host": "no-such-host.invalid"}, "conninfo", "unknown host"),
    ],
)
def test_a_connection_that_cannot_succeed_fails_fast_and_says_why(
    postgres: PostgresServer,
    role_with_secret: str,
    caplog: pytest.LogCaptureFixture,
    app_name: str,
    target: dict[str, str],
    how: str,
    expected: str,
) -> None:
    params: dict[str, object] = {"dbname": "app", **target}
    params["user"] = role_with_secret if params["user"] == "ROLE" else params["user"]
    if params.get("port") == "UNUSED":
        params["port"] = free_port()
    conninfo = postgres.conninfo(password=SECRET if how == "conninfo" else None, **params)  # type: ignore[arg-type]
    if "host" in target:
        conninfo += f" host={target['host']}"
    password: str | Callable[[], str] | None = {
        "conninfo": None,
        "string": SECRET,
        "callable": lambda: SECRET,
    }[how]
    pool = ServerlessPool(
        conninfo, password=password, application_name=app_name, acquire_timeout=30, environ={}
    )
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionFailed) as caught, pool.connection():
            pass
        elapsed = time.monotonic() - started
        stats = pool.stats()
        shown = repr(pool)
    finally:
        pool.close()
    message = str(caught.value)
    assert expected in message
    assert "not retried" in message
    assert stats["connect_attempts"] == 1
    assert stats.get("connect_retries", 0) == 0
    assert stats["connect_errors"] == 1
    assert elapsed < 15  # no backoff loop up to the 30 s acquire_timeout
    assert SECRET not in message
    assert SECRET not in shown
    assert SECRET not in str(stats)
    assert SECRET not in caplog.text
    assert all(SECRET not in str(record.args) for record in caplog.records)
