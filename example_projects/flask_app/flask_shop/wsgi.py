"""The WSGI app: ``gunicorn flask_shop.wsgi:app``, or wrapped for Lambda."""

from __future__ import annotations

from . import create_app

app = create_app()
