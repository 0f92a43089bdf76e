"""The parts of Lambda's context object the handler uses, typed without the AWS SDK."""

from __future__ import annotations

from typing import Protocol

__all__ = ["LambdaContext"]


class LambdaContext(Protocol):
    """What `awslambdaric` (or any runtime) passes as the handler's second argument."""

    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int: ...
