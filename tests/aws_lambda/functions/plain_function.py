"""A handler without any framework, to exercise the emulator itself."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

if os.environ.get("PLAIN_FUNCTION_INIT_FAIL"):
    raise RuntimeError("init failed on purpose")

if os.environ.get("PLAIN_FUNCTION_IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a runtime stuck in its shutdown

STARTED_AT = time.time()


def handler(event: dict[str, Any], context: Any) -> Any:
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    if event.get("crash"):
        os._exit(3)
    if event.get("fail"):
        raise ValueError("failed on purpose")
    return {
        "event": event,
        "pid": os.getpid(),
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID", ""),
        "started_at": STARTED_AT,
    }
