"""``python -m serverless_pool.testing.lambda_emulator module.handler [options]``.

Runs the function on the local emulator behind an HTTP front on 127.0.0.1 until
interrupted (Ctrl-C or SIGTERM), then shuts the instances down as Lambda would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from .front import HttpFront
from .function import EmulatedFunction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serverless_pool.testing.lambda_emulator",
        description="Serve a Lambda handler locally through an HTTP API (v2) front.",
    )
    parser.add_argument("handler", help="module.function, as in the function's settings")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (9000)")
    parser.add_argument("--cwd", default=os.getcwd(), help="the function's code directory")
    parser.add_argument("--instances", type=int, default=1, help="concurrency limit (1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="function timeout, s")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="environment"
    )
    parser.add_argument("--no-freeze", action="store_true", help="do not SIGSTOP idle instances")
    args = parser.parse_args(argv)
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env: expected NAME=VALUE, got {item!r}")
        env[name] = value
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    function = EmulatedFunction(
        args.handler,
        max_instances=args.instances,
        freeze_idle=not args.no_freeze,
        env=env,
        cwd=args.cwd,
        timeout=args.timeout,
    )
    front = HttpFront(function, args.port).start()
    # Names only: values may hold passwords.
    print(
        f"serving {args.handler} on {front.url} (env: {', '.join(sorted(env)) or 'none'})",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        front.stop()
        function.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
