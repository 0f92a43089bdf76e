"""A Secrets Manager secret in RDS's JSON format, as a pool's login."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from ..errors import CredentialsUnavailable
from . import CredentialProvider
from .aws import aws_error, make_client

__all__ = ["SecretsManagerSecret"]

#: Another fetch after a rejection waits at least this long after the last one, so a
#: password that is simply wrong costs one call per second at most, not one per request.
REFETCH_AFTER: Final = 1.0
# Keys of RDS's secret format that fill gaps in the connection string, as libpq names them.
_TARGET_KEYS: Final = (("host", "host"), ("port", "port"), ("dbname", "dbname"))


class SecretsManagerSecret(CredentialProvider):
    """The login in a Secrets Manager secret, as RDS stores it.

    The secret's ``SecretString`` is a JSON object with ``username`` and ``password``
    and optionally ``host``, ``port`` and ``dbname`` (the format of secrets RDS manages
    and of the rotation functions AWS provides). A new connection logs in with the
    secret's username and password; its host, port and dbname are used where the
    connection string has none (so a connection string may point at an RDS Proxy).

    The secret is fetched at the first connection and cached. When the server rejects
    the login (the password was rotated), it is fetched once more and, if it changed,
    the connection is tried again; a second rejection fails at once.

    :param secret_id: the secret's ARN (preferred: it names the region) or name.
    :param region: the AWS region; default: the ARN's, else boto3's (``AWS_REGION``).
    :param version_stage: the staging label to read.
    :param client: a ready boto3 ``secretsmanager`` client (default: one made at first use,
        with short timeouts, honouring ``AWS_ENDPOINT_URL``).
    """

    def __init__(
        self,
        secret_id: str,
        *,
        region: str | None = None,
        version_stage: str = "AWSCURRENT",
        client: Any = None,
    ) -> None:
        if not isinstance(secret_id, str) or not secret_id.strip():
            raise CredentialsUnavailable("Secrets Manager secret: no secret ARN or name given")
        self.secret_id = secret_id.strip()
        self.region = region or _region_of(self.secret_id)
        self.version_stage = version_stage
        self.description = f"secret {self.secret_id!r}"
        self._client = client
        self._lock = threading.Lock()
        self._value: dict[str, str] | None = None
        self._fetched_at = float("-inf")
        self._given = threading.local()  # what login() last gave in each thread
        #: GetSecretValue calls made (successful or not).
        self.fetches = 0

    def login(self, target: Mapping[str, object]) -> dict[str, str]:
        with self._lock:
            value = self._value
            if value is None:
                value = self._fetch()
        self._given.value = value
        params = {"user": value["username"], "password": value["password"]}
        for key, param in _TARGET_KEYS:
            if key in value and target.get(param) in (None, ""):
                params[param] = value[key]
        return params

    def rejected(self) -> bool:
        given = getattr(self._given, "value", None)
        with self._lock:
            if self._value is not given:
                return True  # fetched again meanwhile (another thread): try that
            if time.monotonic() - self._fetched_at < REFETCH_AFTER:
                return False  # just fetched: the secret itself is wrong, or not rotated yet
            after = self._fetch()
        return after != given

    def _fetch(self) -> dict[str, str]:
        """GetSecretValue, parsed and checked; under the lock."""
        if self._client is None:
            self._client = make_client("secretsmanager", self.region, self.description)
        self.fetches += 1
        self._fetched_at = time.monotonic()
        try:
            response = self._client.get_secret_value(
                SecretId=self.secret_id, VersionStage=self.version_stage
            )
        except Exception as err:  # noqa: BLE001 (botocore's errors share no base class)
            raise aws_error(self.description, err) from None
        self._value = _parse(response.get("SecretString"), self.description)
        return self._value


def _parse(text: object, what: str) -> dict[str, str]:
    """The secret's JSON as strings; errors never quote the secret."""
    if not isinstance(text, str):
        raise CredentialsUnavailable(
            f"{what} has no SecretString (a binary secret?); it must be RDS's JSON format"
        )
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CredentialsUnavailable(
            f"{what} is not a JSON object; it must be RDS's format"
            ' {"username": ..., "password": ..., "host": ..., "port": ..., "dbname": ...}'
        )
    parsed: dict[str, str] = {}
    for key in ("username", "password", "host", "port", "dbname"):
        value = data.get(key)
        if value is None or value == "":
            continue
        if key == "port" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise CredentialsUnavailable(f"{what}: {key!r} must be a string")
        parsed[key] = value
    missing = [key for key in ("username", "password") if key not in parsed]
    if missing:
        raise CredentialsUnavailable(f"{what} has no {' and no '.join(map(repr, missing))}")
    return parsed


def _region_of(secret_id: str) -> str | None:
    parts = secret_id.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "secretsmanager":
        return parts[3] or None
    return None
