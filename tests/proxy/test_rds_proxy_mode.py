"""proxy_mode="rds-proxy": the pool sends nothing that would pin a session.

RDS Proxy pins a client to one database connection when it sees session state
change: a SET, a prepared statement, startup ``options``. There is no RDS Proxy to run
locally, so these tests read what actually reaches PostgreSQL from its statement log
and its session state.
"""

from __future__ import annotations

from collections.abc import Callable

from serverless_pool import ServerlessPool
from serverless_pool.testing.postgres import PostgresServer


def test_server_side_timeouts_are_not_sent_as_startup_options(
    logged_postgres: PostgresServer, make_proxy_pool: Callable[..., ServerlessPool]
) -> None:
    timeouts = {"statement_timeout": 5, "idle_in_transaction_session_timeout": 7}
    proxied = make_proxy_pool(logged_postgres.conninfo(), proxy_mode="rds-proxy", **timeouts)
    direct = make_proxy_pool(logged_postgres.conninfo(), proxy_mode="direct", **timeouts)
    query = (
        "SELECT current_setting('statement_timeout'),"
        " current_setting('idle_in_transaction_session_timeout')"
    )
    with proxied.connection() as conn:
        assert conn.execute(query).fetchone() == ("0", "0")
    # The control: in direct mode the same settings do reach the session.
    with direct.connection() as conn:
        assert conn.execute(query).fetchone() == ("5s", "7s")


def test_application_name_is_the_only_startup_parameter_the_pool_adds(
    logged_postgres: PostgresServer,
    make_proxy_pool: Callable[..., ServerlessPool],
    app_name: str,
) -> None:
    pool = make_proxy_pool(logged_postgres.conninfo(), proxy_mode="rds-proxy")
    with pool.connection() as conn:
        assert conn.info.get_parameters().get("application_name") == app_name
        assert "options" not in conn.info.get_parameters()
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == (app_name,)


def test_no_prepared_statement_and_no_session_statement_reaches_the_server(
    logged_postgres: PostgresServer,
    make_proxy_pool: Callable[..., ServerlessPool],
    statements: Callable[[str], list[str]],
    app_name: str,
) -> None:
    pool = make_proxy_pool(logged_postgres.conninfo(), proxy_mode="rds-proxy", ping_after_idle=0)
    assert pool.settings.prepare_threshold is None
    for i in range(30):
        with pool.connection() as conn:
            conn.execute("SELECT %s::int", (i,))
            conn.execute("SELECT pg_advisory_xact_lock(1)")  # dirty in direct mode
        with pool.connection() as conn:
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
            assert prepared == (0,)
    logged = statements(app_name)
    assert not [line for line in logged if line.startswith("execute _pg")]
    made_by_pool = [
        line
        for line in logged
        if line != "statement: "  # the liveness ping: an empty query
        and "pg_prepared_statements" not in line
        and "SELECT $1::int" not in line
        and "pg_advisory_xact_lock" not in line
    ]
    assert made_by_pool == []
    assert pool.stats().get("resets", 0) == 0


def test_explicit_prepare_threshold_is_honoured_behind_rds_proxy(
    logged_postgres: PostgresServer, make_proxy_pool: Callable[..., ServerlessPool]
) -> None:
    """Prepared statements pin; a user who accepts that may still turn them on."""
    pool = make_proxy_pool(logged_postgres.conninfo(), proxy_mode="rds-proxy", prepare_threshold=0)
    with pool.connection() as conn:
        conn.execute("SELECT %s::int", (1,))
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert prepared is not None
    assert prepared[0] >= 1
