"""`ServerlessPoolMiddleware`: every request gives its connections back, whatever happens.

Put it first in ``MIDDLEWARE`` so it wraps everything that may query the database
(sessions, authentication). The release runs in a ``finally``: after a view that
raised, after an ``atomic()`` block left by an exception, and for a streaming response
when the server closes the response (also when the client went away).

Under ASGI, Django runs the ORM of one request in one thread (``sync_to_async`` with
``thread_sensitive=True``); the release runs in that same thread, so no connection is
left behind in an executor thread, where Django's persistent connections leak.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .release import release_connections

__all__ = ["ServerlessPoolMiddleware"]


class ServerlessPoolMiddleware:
    """Django middleware releasing pooled connections at the end of each request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        release = True
        try:
            response: HttpResponseBase = self.get_response(request)
            if response.streaming:
                # The body is produced after we return: release when it is closed.
                response._resource_closers.append(release_connections)  # type: ignore[attr-defined]
                release = False
            return response
        finally:
            if release:
                release_connections()

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        release = True
        try:
            response: HttpResponseBase = await self._aget_response(request)
            if response.streaming:
                # Django closes the response through sync_to_async (thread-sensitive),
                # so the closer runs in the thread that holds the connections.
                response._resource_closers.append(release_connections)  # type: ignore[attr-defined]
                release = False
            return response
        finally:
            if release:
                await sync_to_async(release_connections, thread_sensitive=True)()

    def _aget_response(self, request: HttpRequest) -> Awaitable[HttpResponseBase]:
        return self.get_response(request)  # type: ignore[no-any-return]
