"""Fixtures of the Lambda tests (the helpers live in `lambda_testkit`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from awslambdaric.lambda_context import LambdaContext
from lambda_testkit import make_context


@pytest.fixture
def context_factory() -> Callable[..., LambdaContext]:
    return make_context
