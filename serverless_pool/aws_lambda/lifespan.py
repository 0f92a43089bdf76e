"""ASGI lifespan, once per Lambda instance instead of once per invocation.

Mangum's default runs startup and shutdown around every event, so a pool or client made
in startup is rebuilt for each request. Here startup runs at the first invocation (or
in the init phase), and shutdown when the instance ends, on the instance's one loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

__all__ = ["Lifespan", "LifespanError", "LifespanMode"]

logger = logging.getLogger("serverless_pool")

LifespanMode = Literal["auto", "on", "off"]
Message = dict[str, Any]


class LifespanError(RuntimeError):
    """The app's lifespan startup or shutdown failed."""


class Lifespan:
    """Drives one ASGI app's lifespan protocol on a loop the caller owns."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop, mode: LifespanMode) -> None:
        self._app = app
        self._loop = loop
        self._mode = mode
        #: Shared with every request scope, as the ASGI spec asks.
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.started = False

    def startup(self) -> None:
        """Run the app's startup; raises `LifespanError` if it reports failure."""
        if self._mode == "off" or self.started:
            return
        self._inbox = asyncio.Queue()
        done = self._expect("lifespan.startup")
        self._task = self._loop.create_task(self._run())
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self._loop.run_until_complete(self._settle(done, None))
        self.started = True

    def shutdown(self, timeout: float) -> None:
        """Run the app's shutdown, waiting at most `timeout` seconds."""
        task, self._task = self._task, None
        if task is None or self._inbox is None:
            return
        if task.done() or not self.supported:
            self._reap(task)
            return
        done = self._expect("lifespan.shutdown")
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            self._loop.run_until_complete(self._settle(done, timeout))
        finally:
            if not task.done():
                task.cancel()
                self._loop.run_until_complete(asyncio.wait({task}, timeout=timeout))
            self._reap(task)

    def _expect(self, kind: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting[kind] = future
        return future

    async def _settle(self, future: asyncio.Future[None], timeout: float | None) -> None:
        pending: set[asyncio.Future[Any]] = {future}
        if self._task is not None:
            pending.add(self._task)
        await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            future.result()  # raises LifespanError on a reported failure
            return
        task = self._task
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            if self._mode == "on":
                raise LifespanError(f"the ASGI app does not support lifespan ({error!r})")
            # "auto": an app without lifespan support raises on the unknown scope type.
            logger.debug("ASGI app without lifespan support: %r", error)
            self.supported = False
            return
        if timeout is not None:
            logger.warning("ASGI lifespan shutdown did not finish within %.3f s", timeout)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        await self._app(scope, self._receive, self._send)

    async def _receive(self) -> Message:
        assert self._inbox is not None
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = str(message.get("type", ""))
        for step in ("lifespan.startup", "lifespan.shutdown"):
            future = self._waiting.get(step)
            if future is None or future.done():
                continue
            if kind == f"{step}.complete":
                future.set_result(None)
            elif kind == f"{step}.failed":
                future.set_exception(LifespanError(f"{step} failed: {message.get('message', '')}"))

    @staticmethod
    def _reap(task: asyncio.Task[None]) -> None:
        # Retrieve the outcome so asyncio never logs "exception was never retrieved".
        if task.done() and not task.cancelled():
            task.exception()
