"""A local AWS Lambda that follows AWS's contract: the Runtime and Extensions APIs, real
`awslambdaric` processes, freeze, shutdown, SnapStart, Managed Instances, an HTTP front.

AWS's runtime interface emulator is a Go binary; this is our own implementation of the
same APIs, for tests, demos, benchmarks and the fleet simulation. Everything listens on
127.0.0.1, and the machine must be Linux (``/proc`` is how the emulator watches its
processes). The public API:

- `LambdaInstance(handler, env=..., cwd=..., timeout=..., extensions=[...],
  max_concurrency=None)`: one execution environment. ``start()`` (init),
  ``invoke(event)`` -> `InvocationResult` (``status``: ok, error, timeout, crash,
  throttled; ``cold_start``; ``connections_opened``; ``seconds``), ``freeze()`` /
  ``thaw()`` (SIGSTOP / SIGCONT of the whole environment), ``shutdown()`` ->
  `ShutdownResult` (SIGTERM only if an extension is registered, within Lambda's
  budgets), ``kill()`` (gone without a signal), ``extensions`` (what registered),
  ``output()``, ``close()``. With ``max_concurrency=N`` it is a Lambda Managed
  Instances environment: N workers of the real runtime, concurrent ``invoke()`` calls,
  never frozen; ``wait_workers(n)``, ``workers()``.
- `Snapshot(handler, ...)`: SnapStart. ``take()`` runs init and the before-snapshot
  hooks once; ``restore()`` returns a started `LambdaInstance` restored from it.
- `EmulatedFunction(handler, max_instances=N, snapstart=False, max_concurrency=None,
  on_invocation=...)`: the environments of one function; ``invoke(event)`` routes to a
  free one, starting (or restoring) one if needed; ``shutdown(instance)``.
- `HttpFront(function, port)`: plain HTTP in, HTTP API (payload 2.0) events out.
- `RuntimeApi`: the APIs themselves, for one environment.

The details of the contract, and where the emulator necessarily differs from Lambda
(a killed environment is stopped rather than killed, so its connections neither close
nor answer; a snapshot is a fork), are in the docstrings of `instance` and `snapstart`.

From the command line: ``python -m serverless_pool.testing.lambda_emulator
module.handler --port 9000``, then ``curl http://127.0.0.1:9000/``.
"""

from __future__ import annotations

from .events import http_api_event, http_response, lambda_context
from .front import HttpFront
from .function import EmulatedFunction
from .instance import InitError, InvocationResult, LambdaInstance, ShutdownResult
from .runtime_api import Extension, RuntimeApi
from .snapstart import Snapshot

__all__ = [
    "EmulatedFunction",
    "Extension",
    "HttpFront",
    "InitError",
    "InvocationResult",
    "LambdaInstance",
    "RuntimeApi",
    "ShutdownResult",
    "Snapshot",
    "http_api_event",
    "http_response",
    "lambda_context",
]
