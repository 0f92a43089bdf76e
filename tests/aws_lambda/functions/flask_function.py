"""A Flask app with a pool, served through `make_handler` by the emulator's instances."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify

from serverless_pool import ServerlessPool
from serverless_pool.aws_lambda import make_handler

pool = ServerlessPool()  # SERVERLESS_POOL_* from the env
app = Flask(__name__)


@app.route("/pid")
def pid() -> Any:
    with pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    return jsonify(pid=row[0] if row else None, stats=pool.stats())


@app.route("/boom")
def boom() -> Any:
    raise RuntimeError("boom on purpose")


@app.route("/slow")
def slow() -> Any:
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_sleep(60)")
    return jsonify(done=True)


handler = make_handler(
    app,
    statement_timeout=True,
    deadline_margin=float(os.environ.get("DEADLINE_MARGIN", "0.5")),
    metrics=True,
    connect_on_init=os.environ.get("CONNECT_ON_INIT") == "1",
    register_extension=os.environ.get("REGISTER_EXTENSION", "1") == "1",
)
