"""A throwaway Django project, run as a new user runs one: ``python -m django ...`` in a
process of its own, with a settings module written for the test.

Settings are given as a dict and written out with `repr`, so any value a settings file
may hold works. The project's ``DATABASES`` point at the server the test passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serverless_pool.testing.postgres import APP_DATABASE, APP_PASSWORD, APP_USER, PostgresServer

ENGINE = "django_serverless_pool.backends.postgresql"
MIDDLEWARE = "django_serverless_pool.middleware.ServerlessPoolMiddleware"


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def database(server: PostgresServer, **extra: Any) -> dict[str, Any]:
    """A ``DATABASES`` entry on our ENGINE for `server`'s app database."""
    return {
        "ENGINE": ENGINE,
        "NAME": APP_DATABASE,
        "USER": APP_USER,
        "PASSWORD": APP_PASSWORD,
        "HOST": server.host,
        "PORT": str(server.port),
        **extra,
    }


def settings_for(server: PostgresServer, **overrides: Any) -> dict[str, Any]:
    """What a new project has after following the README, minus what `overrides` change."""
    values: dict[str, Any] = {
        "SECRET_KEY": "newcomer",
        "INSTALLED_APPS": [
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_serverless_pool",
        ],
        "MIDDLEWARE": [MIDDLEWARE],
        "DATABASES": {"default": database(server)},
        "USE_TZ": True,
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
    }
    values.update(overrides)
    return values


def run_django(
    tmp_path: Path, settings: dict[str, Any], *args: str, env: dict[str, str] | None = None
) -> Ran:
    """``python -m django <args>`` in a project whose settings module holds `settings`."""
    return _run(tmp_path, settings, ["-m", "django", *args], env)


def run_python(tmp_path: Path, settings: dict[str, Any], code: str) -> Ran:
    """Run `code` in a process where Django is set up with `settings`."""
    script = tmp_path / "script.py"
    script.write_text("import django\ndjango.setup()\n" + textwrap.dedent(code))
    return _run(tmp_path, settings, [str(script)], None)


def _run(
    tmp_path: Path, settings: dict[str, Any], argv: list[str], env: dict[str, str] | None
) -> Ran:
    lines = [f"{name} = {value!r}" for name, value in settings.items()]
    (tmp_path / "project_settings.py").write_text("\n".join(lines) + "\n")
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SERVERLESS_POOL_", "AWS_LAMBDA_", "DJANGO_", "PG"))
    }
    environ.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        PYTHONDONTWRITEBYTECODE="1",  # the settings file is rewritten between runs
        DJANGO_SETTINGS_MODULE="project_settings",
        **(env or {}),
    )
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)
