"""Credentials fetched at run time for each new connection, instead of a fixed password.

Two providers, each usable as ``password=`` (a provider is a callable returning the
password, like any password callable) or named by a setting (`secret_arn`, `iam_auth`)
in keyword arguments, Django's ``SERVERLESS_POOL``, Flask's ``SERVERLESS_POOL_*`` keys or
``SERVERLESS_POOL_*`` environment variables:

- `SecretsManagerSecret`: a Secrets Manager secret in RDS's JSON format, fetched at the
  first connection, cached, and fetched again once when the server rejects the login
  (the password rotated);
- `RdsIamToken`: an RDS IAM authentication token, generated for a new connection and
  reused until shortly before its 15 minutes run out.

boto3 is imported only when a provider is used (the ``serverless-pool[aws]`` extra; it
is already in the Lambda runtime), so ``import serverless_pool`` stays as light as it was.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..errors import SettingsError

if TYPE_CHECKING:
    from ..settings import PoolSettings
    from .rds_iam import RdsIamToken
    from .secrets_manager import SecretsManagerSecret

__all__ = ["CredentialProvider", "RdsIamToken", "SecretsManagerSecret", "provider_for"]


class CredentialProvider(abc.ABC):
    """Where a pool gets the login of each new connection.

    A subclass supplies `login()`, the connection parameters for one new connection, and
    may override `rejected()`, called when the server refused them.
    """

    #: Shown in errors and logs; never a secret.
    description: str = "credentials"

    @abc.abstractmethod
    def login(self, target: Mapping[str, object]) -> dict[str, str]:
        """libpq parameters (``password``, and maybe ``user``, ``host``...) for a new
        connection to `target`, the parsed connection string. They override `target`'s."""

    def rejected(self) -> bool:
        """The server rejected the login that `login()` last gave in this thread.

        Return True when different credentials are now available, so that one more
        attempt makes sense; False to fail at once.
        """
        return False

    def __call__(self) -> str:
        """The password alone, for code that takes a password callable."""
        return self.login({})["password"]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


def provider_for(
    password: str | Callable[[], str] | None, settings: PoolSettings
) -> CredentialProvider | None:
    """The provider a pool uses: `password` if it is one, else the one its settings name."""
    if isinstance(password, CredentialProvider):
        if settings.secret_arn or settings.iam_auth:
            raise SettingsError(_BOTH)
        return password
    if not (settings.secret_arn or settings.iam_auth):
        return None
    if password is not None:
        raise SettingsError(_BOTH)
    if settings.secret_arn:
        from .secrets_manager import SecretsManagerSecret

        return SecretsManagerSecret(settings.secret_arn, region=settings.aws_region)
    from .rds_iam import RdsIamToken

    return RdsIamToken(region=settings.aws_region)


_BOTH = (
    "a password and a credential provider (secret_arn, iam_auth, or a provider passed as"
    " password=) are both given: the login comes from one of them; remove the other"
)


def __getattr__(name: str) -> object:
    # The providers' modules are loaded on first use only.
    if name == "SecretsManagerSecret":
        from .secrets_manager import SecretsManagerSecret

        return SecretsManagerSecret
    if name == "RdsIamToken":
        from .rds_iam import RdsIamToken

        return RdsIamToken
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
