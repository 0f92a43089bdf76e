"""A no-op internal Lambda extension, so that Lambda sends SIGTERM at shutdown.

Lambda ends an execution environment with SIGTERM (and a short budget) only if some
extension registered through the Extensions API; with none, the environment is
destroyed without a signal and the database keeps its sessions until its own idle
timeout. This extension does what AWS's contract asks of an internal one, and nothing
more (the same shape as the Rust runtime's graceful-shutdown helper):

1. during init, ``POST /2020-01-01/extension/register`` with a ``Lambda-Extension-Name``
   header and ``{"events": []}``: internal extensions may not subscribe to
   ``SHUTDOWN``, and subscribing to nothing costs nothing per invocation;
2. then ``GET /2020-01-01/extension/event/next`` with the ``Lambda-Extension-Identifier``
   it was given, on a daemon thread, with no timeout: this tells Lambda the extension is
   ready (init waits for every registered extension), and, as no event is subscribed,
   the call never returns; the thread sleeps in the kernel and never wakes.

Registration must happen before the runtime asks for its first event (Lambda closes it
then), which is the case when `make_handler` runs at import time, as it should.

On Lambda Managed Instances every worker process runs the init; they share one
environment and one process group, SIGTERM reaches all of them, and extension names
are unique per function, so the first worker's registration serves them all and the
others' refusal is expected.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Final

from ..settings import running_on_managed_instances

__all__ = ["EXTENSION_NAME", "register_extension", "registered"]

logger = logging.getLogger("serverless_pool")

#: The name the extension registers under (unique within a function).
EXTENSION_NAME: Final = "serverless-pool"
_PREFIX: Final = "/2020-01-01/extension"
_REGISTER_TIMEOUT: Final = 5.0

_lock = threading.Lock()
_identifier: str | None = None
_attempted = False


def registered() -> bool:
    """Whether this process registered the extension."""
    return _identifier is not None


def register_extension(environ: Mapping[str, str] | None = None) -> bool:
    """Register the extension once per process; returns whether it is registered.

    Does nothing outside Lambda (no ``AWS_LAMBDA_RUNTIME_API``). A refusal is logged,
    never raised: without the extension the function works as before, minus SIGTERM.
    """
    global _identifier, _attempted
    env = os.environ if environ is None else environ
    address = env.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        return False
    with _lock:
        if _attempted:
            return _identifier is not None
        _attempted = True
        try:
            identifier = _register(address, managed=running_on_managed_instances(env))
        except (OSError, http.client.HTTPException) as err:
            logger.warning(
                "could not register the Lambda extension (no SIGTERM at shutdown): %s", err
            )
            return False
        if identifier is None:
            return False
        _identifier = identifier
    thread = threading.Thread(
        target=_wait_forever,
        args=(address, identifier),
        name="serverless-pool-extension",
        daemon=True,
    )
    thread.start()
    return True


def _register(address: str, *, managed: bool) -> str | None:
    conn = http.client.HTTPConnection(address, timeout=_REGISTER_TIMEOUT)
    try:
        conn.request(
            "POST",
            f"{_PREFIX}/register",
            body=json.dumps({"events": []}),
            headers={"Lambda-Extension-Name": EXTENSION_NAME, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        identifier = response.getheader("Lambda-Extension-Identifier")
    finally:
        conn.close()
    if response.status == 200 and identifier:
        return identifier
    error = _error_type(body)
    if managed and error in ("Extension.InvalidExtensionState", "Extension.RegistrationClosed"):
        # Another worker of this Managed Instances environment registered it first.
        logger.debug("Lambda extension already registered by another worker (%s)", error)
    elif error == "Extension.RegistrationClosed":
        logger.warning(
            "could not register the Lambda extension: registration was closed (%s); call"
            " make_handler() at import time, in the init phase, to get SIGTERM at shutdown",
            error,
        )
    else:
        logger.warning(
            "could not register the Lambda extension (no SIGTERM at shutdown): HTTP %d %s",
            response.status, error or "",
        )  # fmt: skip
    return None


def _error_type(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    return str(document.get("errorType", "")) if isinstance(document, dict) else ""


def _wait_forever(address: str, identifier: str) -> None:
    """Report ready, then wait for events that, subscribed to none, never come."""
    while True:
        # No timeout, as the Extensions API asks: the call blocks until an event.
        conn = http.client.HTTPConnection(address)
        try:
            conn.request(
                "GET", f"{_PREFIX}/event/next", headers={"Lambda-Extension-Identifier": identifier}
            )
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return  # the environment is going away
        finally:
            conn.close()
        if response.status != 200:
            return
