"""A local AWS Lambda: the Runtime API, real `awslambdaric` processes, an HTTP front.

The AWS runtime interface emulator is a Go binary; this is our own implementation of
the same Runtime API for tests, demos and benchmarks. Instances are real processes
running ``python -m awslambdaric module.handler`` that go through init, invocations
with deadlines, freeze (SIGSTOP) and thaw (SIGCONT), timeouts, crashes and re-init,
and shutdown (SIGTERM, then SIGKILL). Everything listens on 127.0.0.1.

From the command line: ``python -m serverless_pool.testing.lambda_emulator
module.handler --port 9000``, then ``curl http://127.0.0.1:9000/``.
"""

from __future__ import annotations

from .events import http_api_event, http_response
from .front import HttpFront
from .function import EmulatedFunction
from .instance import InitError, InvocationResult, LambdaInstance, ShutdownResult
from .runtime_api import RuntimeApi

__all__ = [
    "EmulatedFunction",
    "HttpFront",
    "InitError",
    "InvocationResult",
    "LambdaInstance",
    "RuntimeApi",
    "ShutdownResult",
    "http_api_event",
    "http_response",
]
