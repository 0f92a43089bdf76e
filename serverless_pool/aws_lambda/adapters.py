"""Event mapping for WSGI (apig-wsgi) and ASGI (Mangum) apps.

The mapping of API Gateway, Function URL and ALB events is theirs; what is ours is
choosing between them, stripping a path prefix, and keeping one event loop (and one
ASGI lifespan) per instance.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .context import LambdaContext
from .lifespan import Lifespan, LifespanMode

__all__ = ["AsgiAdapter", "Interface", "WsgiAdapter", "detect_interface"]

logger = logging.getLogger("serverless_pool")

Interface = Literal["auto", "wsgi", "asgi"]
Adapter = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

#: Responses with these content types are sent as text; anything else is base64.
TEXT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/vnd.api+json",
    "image/svg+xml",
)


def detect_interface(app: object) -> Literal["wsgi", "asgi"]:
    """ASGI apps are coroutine functions (or objects with one as ``__call__``)."""
    if not callable(app):
        raise TypeError(f"app: expected a WSGI or ASGI application, got {type(app).__name__}")
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = getattr(app, "__call__", None)  # noqa: B004 - the method itself is inspected
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    # Django's ASGIHandler marks itself for asgiref (and has an async __call__ anyway).
    if getattr(app, "_is_coroutine", None) is not None and not inspect.isclass(app):
        return "asgi"
    return "wsgi"


def _normalize_base_path(base_path: str) -> str:
    path = "/" + base_path.strip("/")
    return "" if path == "/" else path


class WsgiAdapter:
    """apig-wsgi, with binary responses on and an optional path prefix moved to SCRIPT_NAME."""

    def __init__(self, app: Any, *, base_path: str, text_types: Sequence[str]) -> None:
        from apig_wsgi import make_lambda_handler

        self._prefix = _normalize_base_path(base_path)
        target = self._strip_prefix(app) if self._prefix else app
        self._handler = make_lambda_handler(
            target, binary_support=True, non_binary_content_type_prefixes=tuple(text_types)
        )

    def _strip_prefix(self, app: Any) -> Any:
        prefix = self._prefix

        def prefixed(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ.get("PATH_INFO", "")
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
            return app(environ, start_response)

        return prefixed

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return self._handler(event, context)

    def start(self) -> None:
        """Nothing to start: WSGI has no lifespan."""

    def stop(self, timeout: float) -> None:
        """Nothing to stop."""


class AsgiAdapter:
    """Mangum for the event mapping, on one event loop for the whole instance.

    A client bound to a loop (asyncpg, psycopg's async connections, httpx) and made in
    startup or on a first request must still work on the next warm invocation, so the
    loop is never closed between events and no ``asyncio.run`` happens per event.
    """

    def __init__(
        self, app: Any, *, base_path: str, text_types: Sequence[str], lifespan: LifespanMode
    ) -> None:
        self._app = app
        self._base_path = base_path or "/"
        self._text_types = list(text_types)
        self._lifespan_mode: LifespanMode = lifespan
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifespan: Lifespan | None = None
        self._mangum: Any = None
        self._cycle: Any = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The instance's event loop, once started."""
        return self._loop

    def start(self) -> None:
        """Make the loop and run lifespan startup; once per instance."""
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        # The thread's current loop too, for code that asks asyncio for "the" loop
        # outside a running one (events themselves run on it by name, see __call__).
        asyncio.set_event_loop(loop)
        from mangum import Mangum
        from mangum.protocols import HTTPCycle

        self._cycle = HTTPCycle
        self._mangum = Mangum(
            self._app,
            lifespan="off",
            api_gateway_base_path=self._base_path,
            text_mime_types=self._text_types,
        )
        lifespan = Lifespan(self._app, loop, self._lifespan_mode)
        try:
            lifespan.startup()
        except BaseException:
            asyncio.set_event_loop(None)
            loop.close()
            raise
        self._loop = loop
        self._lifespan = lifespan

    def stop(self, timeout: float) -> None:
        """Run lifespan shutdown and close the loop; once per instance."""
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        if loop.is_running():
            return  # a signal arrived mid-event: the exit hook will not get here again
        try:
            if self._lifespan is not None:
                self._lifespan.shutdown(timeout)
        finally:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=timeout))
            loop.close()
            asyncio.set_event_loop(None)

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        loop = self._loop
        if loop is None:
            self.start()
            loop = self._loop
            assert loop is not None
        handler = self._mangum.infer(event, context)
        scope = handler.scope
        if self._lifespan is not None and self._lifespan.supported:
            scope["state"] = self._lifespan.state.copy()
        # Mangum's cycle, run on the instance's loop by name: calling the cycle would ask
        # asyncio for the current loop, which asyncio.run() elsewhere (a library, a test)
        # may have reset.
        cycle = self._cycle(scope, handler.body)
        loop.run_until_complete(cycle.run(self._app))
        try:
            response = {"status": cycle.status, "headers": cycle.headers, "body": cycle.body}
        except AttributeError:
            response = _incomplete(cycle, scope)
        result: dict[str, Any] = handler(response)
        return result


def _incomplete(cycle: Any, scope: dict[str, Any]) -> dict[str, Any]:
    """A 500 for an app that returned without a whole response, as ASGI servers answer.

    (An app that raised has had its 500 from Mangum already.)
    """
    started = hasattr(cycle, "status")
    logger.error(
        "the ASGI app returned from %s %s without %s; answering 500",
        scope.get("method", "?"),
        scope.get("path", "?"),
        "finishing its response body (no http.response.body without more_body)"
        if started
        else "sending a response (no http.response.start)",
    )
    return {
        "status": 500,
        "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
        "body": b"Internal Server Error",
    }
