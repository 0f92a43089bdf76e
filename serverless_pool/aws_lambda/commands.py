"""Management commands run inside the function, by a direct invocation.

A function in a VPC reaches its database; a laptop usually does not. So migrations (and
``createsuperuser --noinput``, ``check --deploy``, a Flask CLI command) can run where
the database is, by invoking the function directly with::

    {"serverless-pool-command": ["migrate", "--noinput"]}

(or the same command as one string, split as a shell would). The answer is::

    {"command": ["migrate", "--noinput"], "exitStatus": 0, "stdout": "...", "stderr": "..."}

Off unless `make_handler` is given an allow-list (``commands=["migrate", "check"]``):
only the named commands run (for a Flask group, its name allows its subcommands). HTTP
events never get here: they are recognised first, and an HTTP source cannot put a
top-level key in its event. Who may invoke the function directly is decided by IAM
(``lambda:InvokeFunction``), as for any direct invocation.

Django (an app from ``get_wsgi_application()``/``get_asgi_application()``, or any app
in a process where Django is set up) runs ``call_command``; a Flask app runs its
``app.cli`` group. Standard input is empty, so a command that would prompt fails
instead of waiting.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..errors import SettingsError

__all__ = ["COMMAND_KEY", "CommandRunner", "command_of", "run_command"]

logger = logging.getLogger("serverless_pool")

#: The key of a direct invocation's payload that asks for a command.
COMMAND_KEY: Final = "serverless-pool-command"
#: Each of stdout and stderr is cut to its last this-many characters in the answer
#: (Lambda's responses are limited to 6 MB).
OUTPUT_LIMIT: Final = 256 * 1024


class CommandRunner:
    """Validated allow-list; `run()` answers a command payload."""

    def __init__(self, allowed: Sequence[str] | bool | None) -> None:
        if allowed is None or allowed is False:
            self.allowed: frozenset[str] = frozenset()
        elif allowed is True or isinstance(allowed, str):
            raise SettingsError(
                "commands: expected a list of command names to allow (e.g. ['migrate',"
                f" 'check']), got {allowed!r}"
            )
        else:
            names = list(allowed)
            bad = [n for n in names if not isinstance(n, str) or not n or n.startswith("-")]
            if bad:
                raise SettingsError(f"commands: expected command names, got {bad!r}")
            self.allowed = frozenset(names)

    def run(self, app: Any, payload: object) -> dict[str, Any]:
        argv = _argv(payload)
        if not self.allowed:
            raise PermissionError(
                "management commands are not enabled in this function: pass"
                " make_handler(..., commands=[...]) with the commands to allow"
            )
        if argv[0] not in self.allowed:
            raise PermissionError(
                f"the command {argv[0]!r} is not allowed here (allowed:"
                f" {', '.join(sorted(self.allowed))})"
            )
        return run_command(app, argv)


def command_of(event: object) -> object | None:
    """The command payload of a direct invocation, or None if `event` is not one."""
    if (type(event) is dict or isinstance(event, Mapping)) and COMMAND_KEY in event:
        payload: object = event[COMMAND_KEY]
        return payload
    return None


def _argv(payload: object) -> list[str]:
    if isinstance(payload, str):
        argv = shlex.split(payload)
    elif isinstance(payload, list) and all(isinstance(a, str) for a in payload):
        argv = list(payload)
    else:
        raise ValueError(
            f"{COMMAND_KEY}: expected a command as a list of strings or one string,"
            f" got {type(payload).__name__}"
        )
    if not argv:
        raise ValueError(f"{COMMAND_KEY}: the command is empty")
    return argv


def run_command(app: Any, argv: list[str]) -> dict[str, Any]:
    """Run `argv` as a Django management command or a Flask CLI command of `app`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    logger.info("running the management command %r", argv[0])
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        _no_stdin(),
    ):
        if _is_flask(app):
            status = _run_flask(app, argv, stderr)
        elif _django_ready():
            status = _run_django(argv, stdout, stderr)
        else:
            raise TypeError(
                "cannot run a management command: the app is neither a Flask app nor a"
                " Django project"
            )
    logger.info("management command %r ended with exit status %d", argv[0], status)
    return {
        "command": argv,
        "exitStatus": status,
        "stdout": _tail(stdout.getvalue()),
        "stderr": _tail(stderr.getvalue()),
        "durationMs": round((time.monotonic() - started) * 1000, 1),
    }


@contextlib.contextmanager
def _no_stdin() -> Any:
    saved = sys.stdin
    sys.stdin = io.StringIO()
    try:
        yield
    finally:
        sys.stdin = saved


def _tail(text: str) -> str:
    if len(text) <= OUTPUT_LIMIT:
        return text
    return f"[... {len(text) - OUTPUT_LIMIT} characters cut ...]\n" + text[-OUTPUT_LIMIT:]


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _is_flask(app: Any) -> bool:
    flask = sys.modules.get("flask")
    return flask is not None and isinstance(app, flask.Flask)


def _django_ready() -> bool:
    if "django" not in sys.modules:
        return False
    from django.apps import apps

    return apps.ready


def _run_django(argv: list[str], stdout: io.StringIO, stderr: io.StringIO) -> int:
    from django.core.management import CommandError, call_command
    from django.db import connections

    try:
        call_command(argv[0], *argv[1:], stdout=stdout, stderr=stderr)
        return 0
    except CommandError as err:
        stderr.write(f"{type(err).__name__}: {err}\n")
        return int(getattr(err, "returncode", 1))
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    finally:
        # Give back what the command borrowed: no request middleware runs here.
        connections.close_all()


def _run_flask(app: Any, argv: list[str], stderr: io.StringIO) -> int:
    import click
    from flask.cli import ScriptInfo

    info = ScriptInfo(create_app=lambda: app)
    try:
        result = app.cli.main(args=argv, prog_name="flask", standalone_mode=False, obj=info)
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.ClickException as err:
        err.show(file=stderr)
        return int(err.exit_code)
    except click.exceptions.Abort:
        stderr.write("Aborted!\n")
        return 1
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    return result if isinstance(result, int) else 0
