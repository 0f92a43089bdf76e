"""Settings of the example shop, all from environment variables (twelve-factor style).

``DATABASE_URL`` (or ``SERVERLESS_POOL_DATABASE_URL``) is a ``postgresql://`` URL; the
password may instead come from ``DATABASE_PASSWORD``, or (as the SAM template does) the
login from a Secrets Manager secret read at run time: ``SERVERLESS_POOL_SECRET_ARN``.
Pool settings come from ``SERVERLESS_POOL_*`` variables (see docs/django.md).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def _database(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured("DATABASE_URL must be a postgresql:// URL")
    return {
        "ENGINE": "django_serverless_pool.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": os.environ.get("DATABASE_PASSWORD") or unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair),
    }


_url = os.environ.get("DATABASE_URL") or os.environ.get("SERVERLESS_POOL_DATABASE_URL")
if not _url:
    raise ImproperlyConfigured("set DATABASE_URL to the shop's postgresql:// URL")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes")
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_serverless_pool",
    "shop",
]
MIDDLEWARE = [
    # First, so that everything below returns its connection at the end of the request.
    "django_serverless_pool.middleware.ServerlessPoolMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "shopsite.urls"
WSGI_APPLICATION = "shopsite.wsgi.application"

DATABASES = {"default": _database(_url)}
# Pool settings shared by every alias; SERVERLESS_POOL_* environment variables fill the
# gaps. expected_concurrency feeds `manage.py check --database default`.
SERVERLESS_POOL: dict[str, Any] = {}
if os.environ.get("SHOP_EXPECTED_CONCURRENCY"):
    SERVERLESS_POOL["expected_concurrency"] = int(os.environ["SHOP_EXPECTED_CONCURRENCY"])

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"serverless_pool": {"handlers": ["console"], "level": "INFO"}},
}
