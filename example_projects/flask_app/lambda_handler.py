"""AWS Lambda entry point of the Flask shop: set the function's handler to
``lambda_handler.handler``.

The app is built once per instance, in Lambda's init phase; `make_handler` maps API
Gateway, Function URL and ALB events to WSGI (with apig-wsgi), bounds every borrow by
the invocation's deadline and makes sure the connection is back in the pool before the
function returns. Configuration comes from the environment (see template.yaml).
"""

from __future__ import annotations

import os

from flask_shop import create_app

from serverless_pool.aws_lambda import make_handler

app = create_app()

handler = make_handler(
    app,
    # One CloudWatch embedded-metric line per invocation (pool hits, new connections...).
    metrics=os.environ.get("SHOP_LAMBDA_METRICS", "") == "1",
    # A path prefix (a custom domain's API mapping), if the API has one.
    base_path=os.environ.get("SHOP_BASE_PATH", "/"),
    # Connect in the init phase, so that the first request does not wait for it.
    connect_on_init=os.environ.get("SHOP_CONNECT_ON_INIT", "") == "1",
    # Management commands a direct invocation may run inside the VPC, e.g.
    # {"serverless-pool-command": ["init-db"]}; none unless listed.
    commands=[c for c in os.environ.get("SHOP_MANAGEMENT_COMMANDS", "").split(",") if c],
)
