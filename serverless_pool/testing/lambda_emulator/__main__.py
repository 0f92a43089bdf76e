"""``python -m serverless_pool.testing.lambda_emulator module.handler [options]``.

Runs the function on the local emulator behind an HTTP front on 127.0.0.1 until
interrupted (Ctrl-C or SIGTERM), then shuts the environments down as Lambda would.
Prints one line per invocation (environment, cold or warm, status, duration, database
connections opened) and passes through everything the function prints, each line
prefixed with its environment's name.
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
from .instance import InvocationResult

_print_lock = threading.Lock()


def _emit(text: str) -> None:
    with _print_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


def invocation_line(result: InvocationResult) -> str:
    """The line printed for one invocation."""
    where = result.instance if result.worker is None else f"{result.instance}/{result.worker}"
    temperature = "cold" if result.cold_start else "warm"
    return (
        f"{where} {temperature} {result.status} {result.seconds * 1000:.1f} ms"
        f" connections opened: {result.connections_opened}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serverless_pool.testing.lambda_emulator",
        description="Serve a Lambda handler locally through an HTTP API (v2) front.",
    )
    parser.add_argument("handler", help="module.function, as in the function's settings")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (9000)")
    parser.add_argument("--cwd", default=os.getcwd(), help="the function's code directory")
    parser.add_argument("--instances", type=int, default=1, help="environments at most (1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="function timeout, s")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="environment"
    )
    parser.add_argument("--no-freeze", action="store_true", help="do not SIGSTOP idle instances")
    parser.add_argument(
        "--snapstart", action="store_true", help="restore environments from one snapshot"
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help="Lambda Managed Instances: N runtime workers per environment",
    )
    parser.add_argument(
        "--extension", action="append", default=[], metavar="PATH",
        help="an external extension to start in each environment",
    )  # fmt: skip
    parser.add_argument(
        "--quiet", action="store_true", help="do not pass the function's output through"
    )
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

    def on_output(name: str, line: str) -> None:
        _emit(f"[{name}] {line if line.endswith(chr(10)) else line + chr(10)}")

    function = EmulatedFunction(
        args.handler,
        max_instances=args.instances,
        freeze_idle=not args.no_freeze,
        snapstart=args.snapstart,
        max_concurrency=args.max_concurrency,
        on_invocation=lambda result: _emit(invocation_line(result) + "\n"),
        env=env,
        cwd=args.cwd,
        timeout=args.timeout,
        extensions=args.extension,
        on_output=None if args.quiet else on_output,
    )
    front = HttpFront(function, args.port).start()
    # Names only: values may hold passwords.
    _emit(f"serving {args.handler} on {front.url} (env: {', '.join(sorted(env)) or 'none'})\n")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        front.stop()
        function.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
