"""A small shop JSON API on Flask and serverless-pool: the same API as the Django example.

``create_app()`` is the application factory (``flask --app flask_shop run``); the WSGI
app for servers and Lambda is ``flask_shop.wsgi:app``. Settings come from the
environment (``SERVERLESS_POOL_DATABASE_URL`` and the other ``SERVERLESS_POOL_*``
variables) or from the `config` mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from .db import db
from .schema import init_db_command
from .views import api


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the app; `config` overrides Flask config keys (e.g. in tests)."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if config:
        app.config.from_mapping(config)
    db.init_app(app)
    app.register_blueprint(api)
    app.cli.add_command(init_db_command)
    return app
