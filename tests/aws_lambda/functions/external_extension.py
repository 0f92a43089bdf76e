#!/usr/bin/env python3
"""An external extension for the emulator tests (what a layer puts in /opt/extensions).

Registers for INVOKE and SHUTDOWN, prints each event it gets, and exits on SHUTDOWN
(after ``EXTERNAL_EXTENSION_SHUTDOWN_DELAY`` seconds, to test the phase's limit).
Standard library only, as an extension must bring its own dependencies.
"""

import http.client
import json
import os
import sys
import time

address = os.environ["AWS_LAMBDA_RUNTIME_API"]
name = os.path.basename(sys.argv[0])


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(address)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


status, headers, _ = call(
    "POST",
    "/2020-01-01/extension/register",
    json.dumps({"events": ["INVOKE", "SHUTDOWN"]}),
    {"Lambda-Extension-Name": name},
)
identifier = headers["Lambda-Extension-Identifier"]
print(f"{name}: registered ({status})", flush=True)
while True:
    status, _, body = call(
        "GET",
        "/2020-01-01/extension/event/next",
        headers={"Lambda-Extension-Identifier": identifier},
    )
    event = json.loads(body)
    print(f"{name}: {event['eventType']} {event.get('shutdownReason', '')}".rstrip(), flush=True)
    if event["eventType"] == "SHUTDOWN":
        time.sleep(float(os.environ.get("EXTERNAL_EXTENSION_SHUTDOWN_DELAY", "0")))
        sys.exit(0)
