"""A handler without any framework, to exercise the emulator itself.

Switches (environment variables): ``PLAIN_FUNCTION_INIT_FAIL`` fails init;
``PLAIN_FUNCTION_IGNORE_SIGTERM`` ignores SIGTERM (a runtime stuck in its shutdown);
``PLAIN_FUNCTION_EXTENSION`` registers serverless-pool's internal extension and reports
SIGTERM on its output; ``PLAIN_FUNCTION_SNAPSHOT_HOOKS`` registers SnapStart hooks that
print what they see.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import Any

if os.environ.get("PLAIN_FUNCTION_INIT_FAIL"):
    raise RuntimeError("init failed on purpose")

if os.environ.get("PLAIN_FUNCTION_EXTENSION"):
    from serverless_pool.aws_lambda.extension import register_extension

    register_extension()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        print(f"SIGTERM received by {os.getpid()}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)

if os.environ.get("PLAIN_FUNCTION_IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a runtime stuck in its shutdown

if os.environ.get("PLAIN_FUNCTION_SNAPSHOT_HOOKS"):
    from snapshot_restore_py import register_after_restore, register_before_snapshot

    @register_before_snapshot
    def before_snapshot() -> None:
        print(f"before snapshot in {os.getpid()}", flush=True)

    @register_after_restore
    def after_restore() -> None:
        print(f"after restore in {os.getpid()}", flush=True)


STARTED_AT = time.time()
INIT_PID = os.getpid()


def handler(event: dict[str, Any], context: Any) -> Any:
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    if event.get("crash"):
        os._exit(3)
    if event.get("fail"):
        raise ValueError("failed on purpose")
    if event.get("print"):
        print(event["print"], flush=True)
    if event.get("register_extension"):
        from serverless_pool.aws_lambda.extension import register_extension

        return {"registered": register_extension()}
    return {
        "event": event,
        "pid": os.getpid(),
        "init_pid": INIT_PID,
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID", ""),
        "started_at": STARTED_AT,
    }
