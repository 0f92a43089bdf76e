"""A tiny Django project in one module (settings, URLs and views) for the Lambda tests.

It echoes what a request looked like to Django, borrowing a pooled connection on the
way, and has ``django.contrib.auth`` so that ``createsuperuser`` can run. The database
is ``DATABASE_URL``.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

BINARY = bytes(range(256))

_url = urlsplit(os.environ["DATABASE_URL"])
SECRET_KEY = "lambda-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_serverless_pool",
]
MIDDLEWARE = ["django_serverless_pool.middleware.ServerlessPoolMiddleware"]
ROOT_URLCONF = "django_echo_site"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES: dict[str, Any] = {
    "default": {
        "ENGINE": "django_serverless_pool.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}


def echo(request: HttpRequest, rest: str) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    response = JsonResponse(
        {
            "method": request.method,
            "path": request.path_info,
            "prefix": request.META.get("SCRIPT_NAME", ""),
            "args": {key: request.GET.getlist(key) for key in request.GET},
            "multi": request.headers.get("X-Multi", ""),
            "cookies": dict(request.COOKIES),
            "body": base64.b64encode(request.body).decode(),
        }
    )
    response.set_cookie("s1", "v1")
    response.set_cookie("s2", "v2")
    return response


def binary(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BINARY, content_type="application/octet-stream")


urlpatterns = [path("echo/<path:rest>", echo), path("binary", binary)]
