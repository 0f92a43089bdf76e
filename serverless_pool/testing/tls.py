"""A self-signed certificate authority and a server certificate, made for one test run.

`make_certificates()` calls the ``openssl`` command line tool (installed with
PostgreSQL's Debian packages) to create a CA and a server certificate for 127.0.0.1
and ``localhost``, signed by that CA, in a directory readable by the user PostgreSQL
runs as. `server_settings()` turns them into the ``postgresql.conf`` entries that
enable TLS on a `PostgresServer`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "make_certificates", "server_settings"]

# P-256 keys: made in milliseconds, where RSA keys take a noticeable part of a second.
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@dataclass(frozen=True)
class Certificates:
    """Paths of the files `make_certificates()` wrote."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_certificates(
    directory: Path,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    common_name: str = "serverless-pool test server",
    owner: str | None = None,
) -> Certificates:
    """Create ``ca.crt`` (and its key) and ``server.crt``/``server.key`` in `directory`.

    `hosts` become the certificate's subject alternative names (IP addresses or DNS
    names), which is what ``sslmode=verify-full`` checks. When running as root, the
    files are given to `owner` (default: the user PostgreSQL runs as), because the
    server refuses a key file that others can read or that it does not own.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "the openssl command was not found; install it with 'apt-get install openssl'"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    names = ",".join(
        f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
        for host in hosts
    )
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName = {names}\n"
        "basicConstraints = CA:FALSE\n"
        "keyUsage = digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
    )
    _run(openssl, "req", "-x509", *_EC_KEY, "-nodes", "-days", "2",
         "-subj", "/CN=serverless-pool test CA", "-keyout", str(ca_key), "-out", str(ca_cert),
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _run(openssl, "req", *_EC_KEY, "-nodes", "-subj", f"/CN={common_name}",
         "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _run(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert),
         "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
         "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
    csr.unlink()
    directory.chmod(0o755)
    for path in (ca_cert, cert):
        path.chmod(0o644)
    for path in (ca_key, key):
        path.chmod(0o600)
    user = _owner(owner)
    if user is not None:
        for path in (directory, ca_cert, cert, key):
            os.chown(path, user.pw_uid, user.pw_gid)
    return Certificates(directory, ca_cert, cert, key)


def server_settings(certificates: Certificates) -> dict[str, str]:
    """``postgresql.conf`` entries that turn TLS on with these certificates."""
    return {
        "ssl": "on",
        "ssl_cert_file": f"'{certificates.server_cert}'",
        "ssl_key_file": f"'{certificates.server_key}'",
    }


def _owner(name: str | None) -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    name = name or os.environ.get("SERVERLESS_POOL_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"no user {name!r} to own the test certificates") from None


def _run(*argv: str) -> None:
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed: {result.stderr.strip()}")
