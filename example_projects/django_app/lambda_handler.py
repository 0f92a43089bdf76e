"""AWS Lambda entry point of the Django shop: set the function's handler to
``lambda_handler.handler``.

Django is set up once per instance, in Lambda's init phase. The shop's views are
synchronous, so the WSGI application is served (Django's ASGI application works the
same way: ``make_handler(shopsite.asgi.application)``). `make_handler` maps API
Gateway, Function URL and ALB events, bounds every borrow by the invocation's deadline
and makes sure the connection is back in the pool before the function returns.
"""

from __future__ import annotations

import os

from shopsite.wsgi import application

from serverless_pool.aws_lambda import make_handler

handler = make_handler(
    application,
    # One CloudWatch embedded-metric line per invocation (pool hits, new connections...).
    metrics=os.environ.get("SHOP_LAMBDA_METRICS", "") == "1",
    # A path prefix (a custom domain's API mapping), if the API has one.
    base_path=os.environ.get("SHOP_BASE_PATH", "/"),
    # Connect in the init phase, so that the first request does not wait for it.
    connect_on_init=os.environ.get("SHOP_CONNECT_ON_INIT", "") == "1",
    # Management commands a direct invocation may run inside the VPC, e.g.
    # {"serverless-pool-command": ["migrate", "--noinput"]}; none unless listed.
    commands=[c for c in os.environ.get("SHOP_MANAGEMENT_COMMANDS", "").split(",") if c],
)
