"""A Secrets Manager secret as the login: real PostgreSQL, moto's server as AWS.

The role's password is changed with ALTER ROLE and the secret is updated through the
Secrets Manager API, in the order AWS's rotation functions use; moto's own recording of
the requests it received counts the fetches.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_serverless_pool import ServerlessPool as FlaskPool
from managed_testkit import rds_secret

from serverless_pool import ServerlessPool, SettingsError
from serverless_pool.credentials import SecretsManagerSecret
from serverless_pool.credentials.secrets_manager import REFETCH_AFTER
from serverless_pool.errors import ConnectionFailed, CredentialsUnavailable
from serverless_pool.testing.aws import MotoServer
from serverless_pool.testing.postgres import PostgresServer

GET = "secretsmanager.GetSecretValue"


def _rotate(secrets: Any, arn: str, new_value: str, set_role_password: Callable[[], None]) -> None:
    """Single-user rotation as AWS's rotation function does it: createSecret (AWSPENDING),
    setSecret (the database), finishSecret (AWSCURRENT moves to the new version)."""
    current = secrets.describe_secret(SecretId=arn)["VersionIdsToStages"]
    old = next(v for v, stages in current.items() if "AWSCURRENT" in stages)
    new = str(uuid.uuid4())
    secrets.put_secret_value(
        SecretId=arn, ClientRequestToken=new, SecretString=new_value, VersionStages=["AWSPENDING"]
    )
    set_role_password()
    secrets.update_secret_version_stage(
        SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=new, RemoveFromVersionId=old
    )


def _shop(postgres: PostgresServer, arn: str, name: str) -> tuple[Flask, FlaskPool]:
    app = Flask(name)
    app.config.update(
        SERVERLESS_POOL_DATABASE_URL=f"postgresql://{postgres.host}:{postgres.port}/app",
        SERVERLESS_POOL_SECRET_ARN=arn,
        SERVERLESS_POOL_MAX_SIZE=1,
        SERVERLESS_POOL_APPLICATION_NAME=name,
    )
    db = FlaskPool(app)

    @app.get("/")
    def whoami() -> dict[str, Any]:
        with db.connection() as conn:
            row = conn.execute("SELECT current_user, pg_backend_pid()").fetchone()
        assert row is not None
        return {"user": row[0], "pid": row[1]}

    return app, db


def test_rotation_while_instances_serve_requests_fails_no_request(
    request: pytest.FixtureRequest,
    aws: MotoServer,
    secrets: Any,
    rotating_postgres: PostgresServer,
    role: str,
    set_password: Callable[[str, str], None],
) -> None:
    arn = secrets.create_secret(
        Name=f"rotation-{role}", SecretString=rds_secret(rotating_postgres, role, "first-password")
    )["ARN"]
    instances = [_shop(rotating_postgres, arn, f"{role}-{i}") for i in range(3)]
    for app, db in instances:
        request.addfinalizer(db.get_pool(app).close)
    clients = [app.test_client() for app, _ in instances]
    fetched_before = aws.calls(GET)
    statuses: list[int] = []

    def serve(rounds: int) -> None:
        for _ in range(rounds):
            for client in clients:
                statuses.append(client.get("/").status_code)

    serve(5)
    time.sleep(REFETCH_AFTER + 0.1)  # the instances have been up a while: a fetch may repeat
    serve(1)
    _rotate(
        secrets,
        arn,
        rds_secret(rotating_postgres, role, "second-password"),
        lambda: set_password(role, "second-password"),
    )
    serve(5)  # warm sessions outlive the password they logged in with
    # The sessions end (an idle timeout, a lifetime, a restart): every instance must log in again.
    ended = rotating_postgres.terminate_backends(
        pids=[b.pid for b in rotating_postgres.backends() if b.user == role]
    )
    serve(10)

    assert ended == len(instances)
    assert statuses == [200] * len(statuses)
    for app, db in instances:
        provider = db.get_pool(app)._credentials
        assert isinstance(provider, SecretsManagerSecret)
        assert provider.fetches == 2  # the first, and exactly one after the rotation
        stats = db.get_pool(app).stats()
        assert stats["connections_opened"] == 2
        assert stats["connect_attempts"] == 3  # the rejected login, then the new password
    # What AWS saw: one fetch per instance at its first connection, one after rotation.
    assert aws.calls(GET) - fetched_before == 2 * len(instances)


def test_the_secret_fills_what_the_connection_string_leaves_out(
    aws: MotoServer, secrets: Any, rotating_postgres: PostgresServer, role: str, app_name: str
) -> None:
    arn = secrets.create_secret(
        Name=f"full-{role}", SecretString=rds_secret(rotating_postgres, role, "first-password")
    )["ARN"]
    with (
        ServerlessPool("", secret_arn=arn, application_name=app_name, environ={}) as pool,
        pool.connection() as conn,
    ):
        row = conn.execute("SELECT current_user, current_database()").fetchone()
        port = conn.info.port
    assert row == (role, "app")
    assert port == rotating_postgres.port


def test_the_setting_comes_from_the_environment(
    aws: MotoServer,
    secrets: Any,
    rotating_postgres: PostgresServer,
    role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn = secrets.create_secret(
        Name=f"env-{role}", SecretString=rds_secret(rotating_postgres, role, "first-password")
    )["ARN"]
    monkeypatch.setenv("SERVERLESS_POOL_SECRET_ARN", arn)
    with (
        ServerlessPool(
            f"host={rotating_postgres.host} port={rotating_postgres.port} dbname=app"
        ) as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_a_password_the_server_keeps_rejecting_fails_fast_after_one_more_fetch(
    aws: MotoServer,
    secrets: Any,
    rotating_postgres: PostgresServer,
    role: str,
    set_password: Callable[[str, str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    arn = secrets.create_secret(
        Name=f"stale-{role}", SecretString=rds_secret(rotating_postgres, role, "first-password")
    )["ARN"]
    pool = ServerlessPool("", secret_arn=arn, max_size=1, environ={})
    try:
        with pool.connection():
            pass
        pool.drain()
        time.sleep(REFETCH_AFTER + 0.1)
        # The database has the new password, the secret not yet (the window of a
        # single-user rotation between its setSecret and finishSecret steps).
        set_password(role, "only-the-database-knows")
        before = aws.calls(GET)
        started = time.monotonic()
        with (
            caplog.at_level(logging.DEBUG, logger="serverless_pool"),
            pytest.raises(
                ConnectionFailed,
                match=r"wrong password or user, login from secret 'arn:.*', not retried",
            ) as failure,
        ):
            pool.acquire()
        elapsed = time.monotonic() - started
        # Unchanged: no second attempt with the same password.
        assert pool.stats()["connect_attempts"] == 2
        assert aws.calls(GET) - before == 1
        # At once again: the secret was fetched moments ago, so it is not fetched again.
        with pytest.raises(ConnectionFailed):
            pool.acquire()
        assert aws.calls(GET) - before == 1
    finally:
        pool.close()
    assert elapsed < 5  # no backoff, no retry loop: a bound for a hang, not a speed claim
    for text in (str(failure.value), caplog.text, repr(pool)):
        assert "first-password" not in text
        assert "only-the-database-knows" not in text


def test_a_missing_secret_says_so_without_trying_to_connect(
    aws: MotoServer, rotating_postgres: PostgresServer
) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:no-such-secret-AbCdEf"
    with ServerlessPool("", secret_arn=arn, environ={}) as pool:
        with pytest.raises(CredentialsUnavailable, match="ResourceNotFoundException") as failure:
            pool.acquire()
        assert pool.stats()["connect_errors"] == 1
    assert "no such secret in this account and region" in str(failure.value)


@pytest.mark.parametrize(
    ("secret_string", "message"),
    [
        ("hunter2-not-json", "is not a JSON object"),
        ('{"username": "app"}', "has no 'password'"),
        ('{"password": "hunter2-no-user"}', "has no 'username'"),
        ('{"username": "app", "password": 7}', "'password' must be a string"),
    ],
)
def test_a_secret_not_in_rds_format_is_refused_without_quoting_it(
    aws: MotoServer, secrets: Any, app_name: str, secret_string: str, message: str
) -> None:
    arn = secrets.create_secret(Name=f"bad-{app_name}-{uuid.uuid4()}", SecretString=secret_string)[
        "ARN"
    ]
    with (
        ServerlessPool("", secret_arn=arn, environ={}) as pool,
        pytest.raises(CredentialsUnavailable, match=message) as failure,
    ):
        pool.acquire()
    assert "hunter2" not in str(failure.value)


def test_a_password_and_a_secret_together_are_refused(aws: MotoServer) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"
    with pytest.raises(SettingsError, match="remove the other"):
        ServerlessPool("host=db", password="x", secret_arn=arn, environ={})
    with pytest.raises(SettingsError, match="keep one"):
        ServerlessPool("host=db", secret_arn=arn, iam_auth=True, environ={})
    with pytest.raises(SettingsError, match="secret_arn: expected the ARN or name"):
        ServerlessPool("host=db", secret_arn="arn:aws:s3:::not-a-secret!", environ={})


def test_a_provider_passed_as_password_is_used_the_same_way(
    aws: MotoServer, secrets: Any, rotating_postgres: PostgresServer, role: str
) -> None:
    arn = secrets.create_secret(
        Name=f"object-{role}", SecretString=rds_secret(rotating_postgres, role, "first-password")
    )["ARN"]
    provider = SecretsManagerSecret(arn)
    assert provider.region == "eu-west-1"  # from the ARN
    assert provider() == "first-password"  # a password callable like any other
    with ServerlessPool("", password=provider, environ={}) as pool, pool.connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    assert provider.fetches == 1
    assert "first-password" not in repr(provider)


def test_importing_the_core_loads_neither_boto3_nor_a_provider() -> None:
    code = (
        "import sys, serverless_pool, serverless_pool.pool\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')"
        " or m.startswith('serverless_pool.credentials.')]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
