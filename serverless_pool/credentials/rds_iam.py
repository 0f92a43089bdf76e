"""RDS IAM authentication tokens, as a pool's login.

A token is a SigV4-presigned request, made locally from the function's AWS credentials
(no call to AWS), valid for 15 minutes, and checked by the server only at login: a
session outlives its token. RDS accepts it only over TLS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from ..errors import SettingsError
from . import CredentialProvider
from .aws import aws_error, make_client

__all__ = ["RdsIamToken"]

#: A token lasts 15 minutes; one is reused for new connections until a minute before.
TOKEN_LIFETIME: Final = 15 * 60.0
RENEW_BEFORE_EXPIRY: Final = 60.0
_WEAK_SSLMODES: Final = ("disable", "allow", "prefer")


class RdsIamToken(CredentialProvider):
    """Log in with an RDS IAM authentication token instead of a password.

    The token is made for the connection's host, port and user (from the connection
    string, or the arguments here when called on its own) and reused for new
    connections to the same target until `max_age` seconds after it was made; then a new
    one is made. When the server rejects a login, one new token is made and the
    connection tried once more (the function's credentials may have been renewed).
    TLS is required: ``sslmode=require`` is added when the connection string has no
    sslmode, and a weaker one (disable, allow, prefer) is refused with a `SettingsError`.

    :param region: the database's AWS region; default: boto3's (``AWS_REGION``).
    :param host, port, user: the target when the provider is called on its own
        (``provider()`` returns a token); the pool takes them from the connection string.
    :param max_age: seconds a token is reused (default 14 minutes).
    :param client: a ready boto3 ``rds`` client.
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        host: str | None = None,
        port: int = 5432,
        user: str | None = None,
        max_age: float = TOKEN_LIFETIME - RENEW_BEFORE_EXPIRY,
        client: Any = None,
    ) -> None:
        if not 0 < max_age <= TOKEN_LIFETIME - RENEW_BEFORE_EXPIRY:
            raise SettingsError(
                f"max_age: a token lasts {TOKEN_LIFETIME:.0f} s; reuse it for more than 0 and"
                f" at most {TOKEN_LIFETIME - RENEW_BEFORE_EXPIRY:.0f} s, got {max_age!r}"
            )
        self.region = region
        self.host, self.port, self.user = host, port, user
        self.max_age = max_age
        self.description = "RDS IAM token" + (f" for {user}@{host}:{port}" if host else "")
        self._client = client
        self._lock = threading.Lock()
        # (host, port, user) -> (token, made at on the monotonic clock)
        self._tokens: dict[tuple[str, int, str], tuple[str, float]] = {}
        self._given = threading.local()  # what login() last gave in each thread
        #: Tokens made so far.
        self.generated = 0

    def login(self, target: Mapping[str, object]) -> dict[str, str]:
        params: dict[str, str] = {}
        sslmode = target.get("sslmode")
        if sslmode in (None, ""):
            params["sslmode"] = "require"
        elif sslmode in _WEAK_SSLMODES:
            raise SettingsError(
                f"iam_auth: RDS accepts IAM tokens over TLS only, and sslmode={sslmode} may"
                " not use it; use sslmode=verify-full (with the RDS CA bundle) or require"
            )
        key = self._target(target)
        params["password"] = self._token(key)
        self._given.value = (key, params["password"])
        return params

    def rejected(self) -> bool:
        given = getattr(self._given, "value", None)
        if given is None:
            return False
        key, token = given
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached[0] == token:
                del self._tokens[key]
        # Within the same second the new token is the same token: no use trying it.
        renewed: bool = self._token(key) != token
        return renewed

    def _target(self, target: Mapping[str, object]) -> tuple[str, int, str]:
        host = str(target.get("host") or self.host or "")
        user = str(target.get("user") or self.user or "")
        port_text = str(target.get("port") or self.port)
        if not host or "," in host or "," in port_text:
            raise SettingsError(
                "iam_auth: an IAM token is made for one host name; give exactly one host"
                " (a token for one host is refused by another)"
            )
        if host.startswith("/"):
            raise SettingsError("iam_auth: IAM tokens need a TCP host name, not a socket path")
        if not user:
            raise SettingsError("iam_auth: the connection string names no user to make a token for")
        return host, int(port_text), user

    def _token(self, key: tuple[str, int, str]) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and now - cached[1] < self.max_age:
                return cached[0]
            if self._client is None:
                self._client = make_client("rds", self.region, self.description)
            host, port, user = key
            try:
                token: str = self._client.generate_db_auth_token(
                    DBHostname=host, Port=port, DBUsername=user, Region=self.region
                )
            except Exception as err:  # noqa: BLE001 (botocore's errors share no base class)
                raise aws_error(self.description, err) from None
            self.generated += 1
            self._tokens[key] = (token, now)
            return token
