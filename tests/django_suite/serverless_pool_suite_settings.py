"""Settings for Django's own test suite (``runtests.py --settings=...``) on our ENGINE.

Like Django's ``test_sqlite.py``, with the ``default`` and ``other`` aliases on
``django_serverless_pool.backends.postgresql`` and a throwaway PostgreSQL that
``tests/django_suite/run.py`` started (its address comes in through the environment).
The role is the server's superuser, as in Django's own CI: ``postgres_tests`` creates
extensions and the backend tests create roles.
"""

from __future__ import annotations

import os

_SERVER = {
    "ENGINE": "django_serverless_pool.backends.postgresql",
    "HOST": "127.0.0.1",
    "PORT": os.environ["DJANGO_SUITE_PORT"],
    "USER": os.environ["DJANGO_SUITE_USER"],
    "PASSWORD": os.environ["DJANGO_SUITE_PASSWORD"],
}

DATABASES = {
    "default": {**_SERVER, "NAME": "django"},
    "other": {**_SERVER, "NAME": "django_other"},
}

SECRET_KEY = "django_tests_secret_key"  # Django's own test value

# A fast hasher, as Django's test settings use.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = False

# Records every test's outcome for run.py to compare with expected.toml.
TEST_RUNNER = "serverless_pool_suite_runner.RecordingRunner"
