"""The app's database extension, importable from views without a circular import."""

from __future__ import annotations

from flask_serverless_pool import ServerlessPool

db = ServerlessPool()
