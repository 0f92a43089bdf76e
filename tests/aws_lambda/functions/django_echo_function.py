"""The Django echo site through `make_handler`, over WSGI and over ASGI (Mangum)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_echo_site")

from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

from serverless_pool.aws_lambda import make_handler

COMMANDS = ["migrate", "createsuperuser", "check", "showmigrations"]

wsgi_handler = make_handler(get_wsgi_application(), metrics=True, commands=COMMANDS)
asgi_handler = make_handler(get_asgi_application(), metrics=True)
