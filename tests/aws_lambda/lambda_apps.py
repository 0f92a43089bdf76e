"""Small WSGI and ASGI apps that echo what the request looked like to them."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, jsonify, request

from serverless_pool import ServerlessPool

BINARY = bytes(range(256))


def _touch(pool: ServerlessPool | None) -> None:
    """Borrow a connection and run a statement, as a real view would."""
    if pool is not None:
        with pool.connection() as conn:
            conn.execute("SELECT 1")


def flask_echo_app(pool: ServerlessPool | None = None) -> Flask:
    app = Flask("lambda_echo")
    app.config["calls"] = 0

    @app.route("/echo/<path:rest>", methods=["GET", "POST"])
    def echo(rest: str) -> Response:
        app.config["calls"] += 1
        _touch(pool)
        response = jsonify(
            method=request.method,
            path=request.path,
            prefix=request.script_root,
            args={key: request.args.getlist(key) for key in request.args},
            multi=request.headers.get("X-Multi", ""),
            cookies=dict(request.cookies),
            body=base64.b64encode(request.get_data()).decode(),
        )
        response.set_cookie("s1", "v1")
        response.set_cookie("s2", "v2")
        return response

    @app.route("/binary")
    def binary() -> Response:
        return Response(BINARY, mimetype="application/octet-stream")

    return app


class AsgiEchoApp:
    """A bare ASGI app (no framework) that counts its lifespan events and requests."""

    def __init__(self, pool: ServerlessPool | None = None) -> None:
        self.startups = 0
        self.shutdowns = 0
        self.calls = 0
        self.pool = pool

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.startups += 1
                    scope["state"]["started"] = self.startups
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.shutdowns += 1
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.calls += 1
        _touch(self.pool)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        if scope["path"] == "/binary":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")],
                }
            )
            await send({"type": "http.response.body", "body": BINARY})
            return
        query = parse_qs(scope["query_string"].decode(), keep_blank_values=True)
        cookie_header = "; ".join(v for k, v in headers if k == "cookie")
        cookies = dict(
            part.strip().split("=", 1) for part in cookie_header.split(";") if "=" in part
        )
        payload = {
            "method": scope["method"],
            "path": scope["path"],
            "prefix": scope.get("root_path", ""),
            "args": query,
            "multi": ",".join(v for k, v in headers if k == "x-multi"),
            "cookies": cookies,
            "body": base64.b64encode(body).decode(),
            "state": dict(scope.get("state") or {}),
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"set-cookie", b"s1=v1; Path=/"),
                    (b"set-cookie", b"s2=v2; Path=/"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
