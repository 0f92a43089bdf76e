"""The Django example's ASGI application served through `make_handler` (via Mangum)."""

from __future__ import annotations

from shopsite.asgi import application

from serverless_pool.aws_lambda import make_handler

handler = make_handler(application)
