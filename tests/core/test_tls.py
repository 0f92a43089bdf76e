"""TLS against a server with a certificate from a CA the tests make themselves."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverless_pool import ServerlessPool
from serverless_pool.errors import ConnectionFailed
from serverless_pool.testing.postgres import PostgresServer
from serverless_pool.testing.tls import Certificates, make_certificates, server_settings


@pytest.fixture(scope="module")
def certificates() -> Iterator[Certificates]:
    # Not pytest's tmp_path: the PostgreSQL user must be able to reach the key file.
    directory = Path(tempfile.mkdtemp(prefix="serverless-pool-tls-"))
    directory.chmod(0o755)
    try:
        yield make_certificates(directory / "server")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def other_ca(certificates: Certificates) -> Certificates:
    """A second, unrelated CA: its certificate must not vouch for the server."""
    return make_certificates(certificates.directory.parent / "other")


@pytest.fixture(scope="module")
def tls_postgres(certificates: Certificates) -> Iterator[PostgresServer]:
    with PostgresServer(settings=server_settings(certificates)) as server:
        yield server


def _ssl_in_use(pool: ServerlessPool) -> tuple[bool, str]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return bool(row[0]), str(row[1])


def test_sslmode_require_encrypts_the_connection(
    tls_postgres: PostgresServer, app_name: str
) -> None:
    with ServerlessPool(
        tls_postgres.conninfo(sslmode="require"), application_name=app_name, environ={}
    ) as pool:
        ssl, version = _ssl_in_use(pool)
    assert ssl
    assert version.startswith("TLS")


def test_sslmode_disable_is_the_control(tls_postgres: PostgresServer, app_name: str) -> None:
    with ServerlessPool(
        tls_postgres.conninfo(sslmode="disable"), application_name=app_name, environ={}
    ) as pool:
        assert _ssl_in_use(pool)[0] is False


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verify_full_accepts_the_server_certified_by_our_ca(
    tls_postgres: PostgresServer, certificates: Certificates, app_name: str, host: str
) -> None:
    conninfo = tls_postgres.conninfo(
        sslmode="verify-full", sslrootcert=str(certificates.ca_cert), host=host
    )
    with ServerlessPool(conninfo, application_name=app_name, environ={}) as pool:
        assert _ssl_in_use(pool)[0] is True


def test_verify_full_refuses_a_server_certified_by_another_ca(
    tls_postgres: PostgresServer, other_ca: Certificates, app_name: str
) -> None:
    conninfo = tls_postgres.conninfo(sslmode="verify-full", sslrootcert=str(other_ca.ca_cert))
    with ServerlessPool(conninfo, application_name=app_name, environ={}) as pool:
        with pytest.raises(ConnectionFailed) as caught, pool.connection():
            pass
        assert pool.stats()["connect_attempts"] == 1
    assert "certificate" in str(caught.value).lower()
    assert "not retried" in str(caught.value)


def test_verify_full_refuses_a_host_name_the_certificate_does_not_name(
    certificates: Certificates, app_name: str
) -> None:
    only_localhost = make_certificates(
        certificates.directory.parent / "localhost-only", hosts=("localhost",)
    )
    with PostgresServer(settings=server_settings(only_localhost)) as server:
        conninfo = server.conninfo(
            sslmode="verify-full", sslrootcert=str(only_localhost.ca_cert), host="127.0.0.1"
        )
        pool = ServerlessPool(conninfo, application_name=app_name, environ={})
        with pool, pytest.raises(ConnectionFailed) as caught, pool.connection():
            pass
        # verify-ca checks the chain only, so the same server is accepted with it.
        relaxed = server.conninfo(
            sslmode="verify-ca", sslrootcert=str(only_localhost.ca_cert), host="127.0.0.1"
        )
        with ServerlessPool(relaxed, application_name=app_name, environ={}) as pool:
            assert _ssl_in_use(pool)[0] is True
    assert "127.0.0.1" in str(caught.value)
