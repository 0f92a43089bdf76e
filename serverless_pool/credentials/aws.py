"""boto3, imported on first use, with timeouts that fit a function serving a request.

botocore's defaults (60 s to connect, 60 s to read, retries) would let a function in a
VPC with no route to the AWS API hang until Lambda kills it. Here a call gives up after
at most two attempts of 1 s to connect and 3 s to read, and the failure says what to check.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import CredentialsUnavailable

__all__ = ["aws_error", "make_client"]

_lock = threading.Lock()
_CONNECT_TIMEOUT = 1.0
_READ_TIMEOUT = 3.0
_MAX_ATTEMPTS = 2


def make_client(service: str, region: str | None, what: str) -> Any:
    """A boto3 client for `service`; `what` names the provider in errors."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise CredentialsUnavailable(
            f"{what} needs boto3, which is not installed: install serverless-pool[aws]"
            " (boto3 is already there in the AWS Lambda Python runtime)"
        ) from None
    config = Config(
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
        retries={"max_attempts": _MAX_ATTEMPTS, "mode": "standard"},
    )
    # A boto3 Session is not thread-safe to make clients from; the clients themselves are.
    with _lock:
        try:
            session: Any = boto3.session.Session()  # typed per service name; ours is a variable
            return session.client(service, region_name=region, config=config)
        except Exception as err:  # noqa: BLE001 (botocore raises several unrelated types here)
            raise aws_error(what, err) from None


def aws_error(what: str, err: BaseException) -> CredentialsUnavailable:
    """`err` from boto3 as a `CredentialsUnavailable`; boto3's messages carry no secret."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
        hint = _HINTS.get(code, "")
        return CredentialsUnavailable(f"{what}: AWS answered {code or 'an error'}{hint}: {err}")
    name = type(err).__name__
    hint = _HINTS.get(name, "")
    return CredentialsUnavailable(f"{what}: {name}{hint}: {err}")


_HINTS = {
    "AccessDeniedException": " (the function's role needs secretsmanager:GetSecretValue on it,"
    " and kms:Decrypt if the secret uses a customer managed key)",
    "ResourceNotFoundException": " (no such secret in this account and region)",
    "DecryptionFailure": " (the function's role cannot use the secret's KMS key)",
    "NoCredentialsError": " (no AWS credentials: the function's role, or AWS_* variables)",
    "NoRegionError": " (set the aws_region setting or AWS_REGION)",
    "ConnectTimeoutError": " (no route to the AWS API: a function in a VPC needs a VPC"
    " endpoint for the service or a NAT gateway)",
    "EndpointConnectionError": " (no route to the AWS API: a function in a VPC needs a VPC"
    " endpoint for the service or a NAT gateway)",
    "ReadTimeoutError": " (the AWS API did not answer in time)",
}
