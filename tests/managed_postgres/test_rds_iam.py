"""RDS IAM tokens as the login, against a real PostgreSQL over TLS.

PostgreSQL cannot check an IAM token, so the test makes the role's password the token
the provider hands out and watches what the server accepts: a login succeeds only if
exactly that token was sent. The token is boto3's own ``generate_db_auth_token``,
made locally from the (throwaway) credentials; no AWS call is involved.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from serverless_pool import ServerlessPool, SettingsError
from serverless_pool.credentials import RdsIamToken
from serverless_pool.errors import ConnectionFailed
from serverless_pool.testing.aws import REGION, MotoServer
from serverless_pool.testing.postgres import PostgresServer
from serverless_pool.testing.tls import make_certificates, server_settings


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[PostgresServer]:
    directory = Path(tempfile.mkdtemp(prefix="serverless-pool-iam-tls-"))
    directory.chmod(0o755)
    try:
        with PostgresServer(settings=server_settings(make_certificates(directory / "ca"))) as pg:
            yield pg
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _set_password(server: PostgresServer, role: str, password: str) -> None:
    from psycopg import sql

    with server.superuser_connection() as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )


@pytest.fixture
def iam_role(tls_postgres: PostgresServer, app_name: str) -> Iterator[str]:
    from psycopg import sql

    name = app_name.replace("-", "_")
    with tls_postgres.superuser_connection() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    tls_postgres.terminate_backends(pids=[b.pid for b in tls_postgres.backends() if b.user == name])
    with tls_postgres.superuser_connection() as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _conninfo(server: PostgresServer, role: str, **extra: str) -> str:
    return server.conninfo(user=role, password=None, **extra)


def test_the_token_is_sent_reused_for_new_connections_and_renewed_after_max_age(
    aws: MotoServer, tls_postgres: PostgresServer, iam_role: str, app_name: str
) -> None:
    provider = RdsIamToken(region=REGION, max_age=4.0)
    with ServerlessPool(
        _conninfo(tls_postgres, iam_role), password=provider, application_name=app_name,
        max_size=1, environ={},
    ) as pool:  # fmt: skip
        # What the pool will send for this target: the provider's current token.
        token = provider.login(
            {"host": tls_postgres.host, "port": str(tls_postgres.port), "user": iam_role}
        )["password"]
        _set_password(tls_postgres, iam_role, token)
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
        assert row == (iam_role, True)  # logged in with that token, over TLS
        # A new connection while the token is young: the same token, not a new one.
        tls_postgres.terminate_backends(application_name=app_name)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert provider.generated == 1
        # Once it is older than max_age, a new connection gets a new token, which the
        # server (still expecting the first) refuses; one more token, then it fails fast.
        time.sleep(4.1)
        tls_postgres.terminate_backends(application_name=app_name)
        with pytest.raises(ConnectionFailed, match="wrong password or user, login from RDS IAM"):
            pool.acquire()
        assert provider.generated >= 2
        # The role now expects the token the provider holds: the pool logs in with it.
        _set_password(
            tls_postgres, iam_role, provider.login({**_target(tls_postgres, iam_role)})["password"]
        )
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (iam_role,)

    # What was sent is an RDS IAM token for this host, port, user and region.
    url = urlsplit("https://" + token)
    query = parse_qs(url.query)
    assert (url.hostname, url.port) == (tls_postgres.host, tls_postgres.port)
    assert query["Action"] == ["connect"]
    assert query["DBUser"] == [iam_role]
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Credential"][0].endswith(f"/{REGION}/rds-db/aws4_request")
    assert "X-Amz-Signature" in query


def _target(server: PostgresServer, role: str) -> dict[str, object]:
    return {"host": server.host, "port": str(server.port), "user": role}


def test_iam_auth_from_settings_requires_tls(
    aws: MotoServer, tls_postgres: PostgresServer, iam_role: str, app_name: str
) -> None:
    for weak in ("disable", "allow", "prefer"):
        with (
            ServerlessPool(
                _conninfo(tls_postgres, iam_role, sslmode=weak), iam_auth=True, environ={}
            ) as pool,
            pytest.raises(SettingsError, match=f"sslmode={weak} may not use it"),
        ):
            pool.acquire()
    # No sslmode in the connection string: require is added.
    with ServerlessPool(
        _conninfo(tls_postgres, iam_role), iam_auth=True, application_name=app_name, environ={}
    ) as pool:
        provider = pool._credentials
        assert isinstance(provider, RdsIamToken)
        _set_password(
            tls_postgres, iam_role, provider.login(_target(tls_postgres, iam_role))["password"]
        )
        with pool.connection() as conn:
            assert conn.info.get_parameters().get("sslmode") == "require"
            row = conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
        assert row == (True,)


@pytest.mark.parametrize(
    ("conninfo", "message"),
    [
        ("host=a,b user=app sslmode=require", "give exactly one host"),
        ("host=/tmp user=app sslmode=require", "not a socket path"),
        ("host=db.internal sslmode=require", "names no user"),
    ],
)
def test_iam_auth_refuses_targets_a_token_cannot_name(
    aws: MotoServer, conninfo: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGUSER", raising=False)
    with (
        ServerlessPool(conninfo, iam_auth=True, environ={}) as pool,
        pytest.raises(SettingsError, match=message),
    ):
        pool.acquire()


def test_max_age_is_bounded_by_the_token_lifetime() -> None:
    with pytest.raises(SettingsError, match="max_age"):
        RdsIamToken(max_age=15 * 60)
    ok: Callable[[], RdsIamToken] = lambda: RdsIamToken(max_age=60)  # noqa: E731
    assert ok().max_age == 60
