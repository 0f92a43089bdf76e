"""Run a WSGI or ASGI app on AWS Lambda with the pool's per-invocation lifecycle.

``from serverless_pool.aws_lambda import make_handler``; ``handler = make_handler(app)``.

Importing this package imports neither Django nor Flask, and Mangum or apig-wsgi only
when a handler for that kind of app is made.
"""

from __future__ import annotations

from ..errors import UnsupportedEvent
from .commands import COMMAND_KEY
from .context import LambdaContext
from .events import classify
from .handler import LambdaHandler, make_handler
from .warmup import is_warmup

__all__ = [
    "COMMAND_KEY",
    "LambdaContext",
    "LambdaHandler",
    "UnsupportedEvent",
    "classify",
    "is_warmup",
    "make_handler",
]
