"""The example shop project, run as users run it: its own settings from the environment,
in a separate process, against a database of its own on the shared server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from django_testkit import EXAMPLE

from serverless_pool.testing.postgres import APP_PASSWORD, PostgresServer

_SCRIPT = r"""
import io, json, sys
from django.core.management import call_command
from shopsite.wsgi import application
from shopsite.asgi import application as asgi_application
from django.test import Client

out = io.StringIO()
call_command("migrate", verbosity=0)
call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # migrations up to date
call_command("check", "--database", "default", "--fail-level", "WARNING", stdout=out)
call_command("serverless_pool", "check", stdout=out)
client = Client()
created = client.post("/products", {"name": "desk", "price_cents": 900, "stock": 2},
                      "application/json")
pk = created.json()["id"]
order = client.post("/orders", {"product": pk, "quantity": 2}, "application/json")
short = client.post("/orders", {"product": pk, "quantity": 1}, "application/json")
print(json.dumps({
    "wsgi": type(application).__name__,
    "asgi": type(asgi_application).__name__,
    "created": created.status_code,
    "order": order.status_code,
    "short": short.status_code,
    "stock": client.get(f"/products/{pk}").json()["stock"],
    "health": client.get("/health").json(),
    "commands": out.getvalue(),
}))
"""


def test_the_example_project_migrates_checks_and_serves(postgres: PostgresServer) -> None:
    dbname = f"shop_{uuid.uuid4().hex[:8]}"
    postgres.execute(f"CREATE DATABASE {dbname} OWNER app")
    try:
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url(dbname=dbname),
            "SHOP_EXPECTED_CONCURRENCY": "10",
            "DJANGO_SETTINGS_MODULE": "shopsite.settings",
            "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        postgres.execute(f"DROP DATABASE {dbname} WITH (FORCE)")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["wsgi"] == "WSGIHandler"
    assert result["asgi"] == "ASGIHandler"
    assert (result["created"], result["order"], result["short"]) == (201, 201, 409)
    assert result["stock"] == 0
    assert result["health"] == {"database": True}
    assert (
        "fits: max_size 1 x 1 worker per environment x 10 environments = 10 connections"
        in result["commands"]
    )
    assert APP_PASSWORD not in done.stdout + done.stderr
