"""The one settings schema, shared by the core and every integration.

Each setting is declared once in `SCHEMA`, with its type, its default and its
documentation. `PoolSettings.load()` reads keyword arguments (or a Django/Flask mapping)
and ``SERVERLESS_POOL_*`` environment variables through that schema; an explicit value
wins over the environment, which wins over the default. Every error names the setting
and where its value came from.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from .errors import SettingsError

__all__ = [
    "ENV_PREFIX",
    "OTHER_ENV_VARS",
    "PROXY_MODES",
    "RESET_MODES",
    "SCHEMA",
    "PoolSettings",
    "Setting",
    "check_environment",
    "running_on_lambda",
    "running_on_managed_instances",
    "show_value",
    "unknown_name_message",
    "workers_per_environment",
]

ENV_PREFIX: Final = "SERVERLESS_POOL_"
PROXY_MODES: Final = ("direct", "pgbouncer-transaction", "rds-proxy")
RESET_MODES: Final = ("always", "never")
#: ``SERVERLESS_POOL_*`` variables that are not settings of the schema, read elsewhere:
#: the database URL, and the test servers' options (`serverless_pool.testing`).
OTHER_ENV_VARS: Final = frozenset({"DATABASE_URL", "PG_BINDIR", "PG_USER", "PGBOUNCER"})

ProxyMode = Literal["direct", "pgbouncer-transaction", "rds-proxy"]
ResetMode = Literal["always", "never"]

#: The longest duration any setting takes, in seconds: 2**31 - 1 ms, which is both
#: PostgreSQL's limit for its timeouts and the longest wait poll() takes.
MAX_SECONDS: Final = (2**31 - 1) / 1000


def running_on_lambda(environ: Mapping[str, str] | None = None) -> bool:
    """True inside an AWS Lambda execution environment (or our local emulator)."""
    env = os.environ if environ is None else environ
    return bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))


def running_on_managed_instances(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a Lambda Managed Instances execution environment.

    ``awslambdaric`` runs in multi-concurrent mode whenever ``AWS_LAMBDA_MAX_CONCURRENCY``
    is set; Lambda also sets ``AWS_LAMBDA_INITIALIZATION_TYPE`` to
    ``lambda-managed-instances`` there (as AWS's own runtime interface emulator does).
    """
    env = os.environ if environ is None else environ
    return (
        "AWS_LAMBDA_MAX_CONCURRENCY" in env
        or env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "lambda-managed-instances"
    )


def workers_per_environment(environ: Mapping[str, str] | None = None) -> int:
    """Processes of one Lambda execution environment, each with pools of its own.

    On Lambda Managed Instances the Python runtime forks ``AWS_LAMBDA_MAX_CONCURRENCY``
    worker processes per environment (the variable is how ``awslambdaric`` itself tells
    the mode apart), each running the module's init and one request at a time; on
    on-demand Lambda, and off Lambda, it is one process.
    """
    env = os.environ if environ is None else environ
    raw = env.get("AWS_LAMBDA_MAX_CONCURRENCY", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


# -- value parsers: each takes a raw value (from Python or from a string) -------------

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def _int_at_least(minimum: int, maximum: int = 100_000) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number, not a boolean")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            number = int(value.strip())
        else:
            raise ValueError("expected a whole number")
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        if number > maximum:
            raise ValueError(f"must be at most {maximum:,}")
        return number

    return parse


def _seconds(*, allow_zero: bool) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number of seconds, not a boolean")
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise ValueError("expected a number of seconds") from None
        else:
            raise ValueError("expected a number of seconds")
        if not math.isfinite(number):
            raise ValueError("must be a finite number of seconds")
        if number < 0 or (number == 0 and not allow_zero):
            raise ValueError("must be at least 0" if allow_zero else "must be more than 0")
        if number > MAX_SECONDS:
            raise ValueError(f"must be at most {MAX_SECONDS:g} seconds (about 24.8 days)")
        return number

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}")

    return parse


def _reset_mode(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        # Guessing from the SQL which borrows changed the session was removed: a SQL
        # function can change anything.
        raise ValueError(
            "'auto' is no longer a mode: the reset is now always sent, at no extra round"
            " trip; use 'always' (the default in direct mode) or 'never'"
        )
    return _choice(RESET_MODES)(value)


def _optional_threshold(value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "off"}):
        return None
    return _int_at_least(0)(value)


def _optional_text(pattern: str, what: str) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        if value is None:
            return None
        # compiled (and cached by `re`) at first use, not at import
        if isinstance(value, str) and re.fullmatch(pattern, value.strip()):
            return value.strip()
        raise ValueError(f"expected {what}")

    return parse


# A Secrets Manager secret: its ARN (any partition) or its name.
_SM_RESOURCE = (
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}"
    r"|[A-Za-z0-9/_+=.@-]{1,512}"
)
_REGION = r"[a-z]{2}(-[a-z]+)+-\d{1,2}"
# A SQL function's name as written unquoted, optionally schema-qualified.
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
_FUNCTION_NAME = rf"{_IDENTIFIER}(\.{_IDENTIFIER})?"


def _name(value: object) -> str:
    if isinstance(value, str) and value.strip() and len(value) <= 63:
        return value.strip()
    raise ValueError("expected a non-empty text of at most 63 characters")


class Setting:
    """One entry of the schema (immutable).

    Written out rather than a dataclass, as `PoolSettings` is: a dataclass is generated
    at import time, and these two took a third of ``import serverless_pool``.
    """

    __slots__ = ("default", "default_doc", "doc", "name", "parse")

    name: str
    parse: Callable[[object], Any]
    default: Any
    doc: str
    #: how the default reads in documentation when it depends on the environment
    default_doc: str

    def __init__(
        self,
        name: str,
        parse: Callable[[object], Any],
        default: Any,
        doc: str,
        default_doc: str = "",
    ) -> None:
        for field, value in (
            ("name", name),
            ("parse", parse),
            ("default", default),
            ("doc", doc),
            ("default_doc", default_doc),
        ):
            object.__setattr__(self, field, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Setting is immutable (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Setting is immutable (tried to delete {name!r})")

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


#: Sentinel for defaults that depend on the environment or on another setting.
_DERIVED: Final = object()

SCHEMA: Final[tuple[Setting, ...]] = (
    Setting("name", _name, "default", "Name of the pool, used in errors, logs and stats."),
    Setting(
        "max_size",
        _int_at_least(1),
        _DERIVED,
        "Most connections the pool holds at once. One instance serves one request at a"
        " time on Lambda (and so does each worker process of a Managed Instances"
        " environment), so one connection is enough there.",
        "1 on Lambda, else 4",
    ),
    Setting(
        "min_size",
        _int_at_least(0),
        0,
        "Connections `pool.warm()` opens ahead of use; idle ones are never closed below"
        " this count for being idle.",
    ),
    Setting(
        "acquire_timeout",
        _seconds(allow_zero=False),
        5.0,
        "Seconds a borrow may wait for a free connection, including connect retries."
        " Lowered to the Lambda invocation's remaining time when that is shorter.",
    ),
    Setting(
        "connect_timeout",
        _seconds(allow_zero=False),
        5.0,
        "Seconds one connection attempt may take.",
    ),
    Setting(
        "max_idle",
        _seconds(allow_zero=False),
        10 * 60.0,
        "Seconds an unused connection is kept before it is closed at the next borrow or return.",
    ),
    Setting(
        "max_lifetime",
        _seconds(allow_zero=False),
        60 * 60.0,
        "Seconds after which a connection is replaced, shortened by up to 10% of random"
        " jitter so a fleet does not reconnect in step.",
    ),
    Setting(
        "ping_after_idle",
        _seconds(allow_zero=True),
        _DERIVED,
        "A connection idle longer than this gets a real round trip before it is handed"
        " out (it may have been frozen); 0 pings on every borrow. Lambda Managed"
        " Instances are never frozen, so there it only guards against a network path"
        " that died silently.",
        "5, or 60 on Lambda Managed Instances",
    ),
    Setting(
        "ping_timeout",
        _seconds(allow_zero=False),
        1.0,
        "Seconds the liveness ping may take before the connection counts as dead.",
    ),
    Setting(
        "idle_session_timeout",
        _seconds(allow_zero=True),
        _DERIVED,
        "Server-side `idle_session_timeout` set on each connection (direct mode), so"
        " the server reclaims the slot of an instance that stays frozen; 0 leaves the"
        " server's value.",
        "900 on Lambda, else 0",
    ),
    Setting(
        "idle_in_transaction_session_timeout",
        _seconds(allow_zero=True),
        0.0,
        "Server-side `idle_in_transaction_session_timeout` set on each connection"
        " (direct mode); 0 leaves the server's value.",
    ),
    Setting(
        "statement_timeout",
        _seconds(allow_zero=True),
        0.0,
        "Server-side `statement_timeout` set on each connection (direct mode); 0 leaves"
        " the server's value.",
    ),
    Setting(
        "autocommit",
        _parse_bool,
        True,
        "Hand out connections in autocommit mode; with false, use `conn.transaction()`"
        " or commit explicitly (an open transaction is rolled back on return).",
    ),
    Setting(
        "proxy_mode",
        _choice(PROXY_MODES),
        "direct",
        "What sits between the pool and PostgreSQL: `direct`, `pgbouncer-transaction`"
        " (no prepared statements, no session state) or `rds-proxy` (nothing that pins"
        " a session).",
    ),
    Setting(
        "prepare_threshold",
        _optional_threshold,
        None,
        "psycopg's `prepare_threshold`: executions of a query within one borrow before it"
        " is prepared on the server; `none` never prepares. The reset on return drops"
        " prepared statements, so they last one borrow.",
    ),
    Setting(
        "reset_on_return",
        _reset_mode,
        _DERIVED,
        "`always`: every returned connection gets `DISCARD ALL` (sent on return; the"
        " next borrow reads its answer before anything of the borrower is sent, waiting"
        " for the rest of the round trip when it comes right after the return, and a"
        " failed reset means a fresh session), so nothing of a borrower's session reaches"
        " the next; `never` leaves the server session as the borrower left it."
        " Python-side connection state is restored either way.",
        "always in direct mode, never behind a proxy",
    ),
    Setting(
        "retry_backoff",
        _seconds(allow_zero=False),
        0.05,
        "First delay, in seconds, between connect attempts refused as transient (too"
        " many connections, server starting up); doubles each time, with full jitter.",
    ),
    Setting(
        "retry_backoff_max",
        _seconds(allow_zero=False),
        1.0,
        "Longest delay between two connect attempts.",
    ),
    Setting(
        "application_name",
        _name,
        "serverless-pool",
        "`application_name` of new connections, unless the conninfo sets one.",
    ),
    Setting(
        "read_only",
        _parse_bool,
        False,
        "The pool serves reads only and may keep connections to a read-only server (a"
        " replica). By default a pool is for writes: in direct mode it connects only to"
        " a server that accepts writes (libpq's `target_session_attrs=read-write`, which"
        " also picks the writer of a multi-host connection string), retries a read-only"
        " one with backoff within the deadline, and closes a connection whose statement"
        " found the server read-only (SQLSTATE 25006).",
    ),
    Setting(
        "secret_arn",
        _optional_text(_SM_RESOURCE, "the ARN or name of a Secrets Manager secret"),
        None,
        "Secrets Manager secret (ARN or name) in RDS's JSON format: user and password"
        " come from it, and host, port and dbname where the connection string has none."
        " Fetched at the first connection and cached; fetched again once when the server"
        " rejects the password. Needs boto3 (`serverless-pool[aws]`).",
        "none",
    ),
    Setting(
        "iam_auth",
        _parse_bool,
        False,
        "Log in with an RDS IAM authentication token for the connection's host, port and"
        " user instead of a password, generated for a new connection and reused until a"
        " minute before its 15 minutes run out. Needs TLS (`sslmode=require` or"
        " stricter; `require` is set when the connection string has no sslmode) and boto3.",
    ),
    Setting(
        "aws_region",
        _optional_text(_REGION, "an AWS region name such as 'eu-west-1'"),
        None,
        "AWS region of the secret or the database for `secret_arn` and `iam_auth`.",
        "the secret ARN's, else AWS_REGION",
    ),
    Setting(
        "tcp_timeout",
        _seconds(allow_zero=True),
        10.0,
        "Seconds after which the client's kernel gives up on a server that stops"
        " acknowledging what was sent or the keepalive probes of an idle connection"
        " (libpq's `tcp_user_timeout` and `keepalives_*`); 0 leaves the operating"
        " system's defaults (minutes). A server that is alive never trips it, however"
        " long its query runs.",
    ),
    Setting(
        "deadline_function",
        _optional_text(
            _FUNCTION_NAME,
            "the name of a SQL function, optionally schema-qualified (e.g."
            " 'serverless_pool.bound_statement'), unquoted",
        ),
        None,
        "With statements bounded by the deadline (`make_handler(statement_timeout=True)`,"
        " `bound_statements_by_deadline()`), the SQL function called with the"
        " milliseconds left (`SELECT fn(ms)`) to set `statement_timeout` for the"
        " transaction, instead of `SET LOCAL` or `set_config`: RDS Proxy pins the"
        " session on those, not on a function (see docs/managed_postgres.md).",
        "none",
    ),
    Setting(
        "close_on_sigterm",
        _parse_bool,
        True,
        "Close the pool's connections when the process receives SIGTERM (the handler"
        " already installed still runs).",
    ),
)

_BY_NAME: Final = {s.name: s for s in SCHEMA}


class PoolSettings:
    """Validated settings of one pool (immutable). Build it with `PoolSettings.load()`.

    Compared and hashed by value; `replace()` makes a changed copy.
    """

    name: str
    max_size: int
    min_size: int
    acquire_timeout: float
    connect_timeout: float
    max_idle: float
    max_lifetime: float
    ping_after_idle: float
    ping_timeout: float
    idle_session_timeout: float
    idle_in_transaction_session_timeout: float
    statement_timeout: float
    autocommit: bool
    proxy_mode: ProxyMode
    prepare_threshold: int | None
    reset_on_return: ResetMode
    retry_backoff: float
    retry_backoff_max: float
    application_name: str
    read_only: bool
    secret_arn: str | None
    iam_auth: bool
    aws_region: str | None
    tcp_timeout: float
    deadline_function: str | None
    close_on_sigterm: bool

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(_FIELDS)
        missing = [field for field in _FIELDS if field not in values]
        if unknown or missing:
            raise TypeError(
                f"PoolSettings: unknown {sorted(unknown)}, missing {missing};"
                " build settings with PoolSettings.load()"
            )
        for field in _FIELDS:
            object.__setattr__(self, field, values[field])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"PoolSettings are immutable (tried to set {name!r}); use settings.replace()"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PoolSettings are immutable (tried to delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{field}={value!r}" for field, value in self.as_dict().items())
        return f"PoolSettings({shown})"

    @classmethod
    def load(
        cls,
        values: Mapping[str, object] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        source: str = "keyword argument",
        spell: Callable[[str], str] | None = None,
    ) -> PoolSettings:
        """Validate `values` (e.g. keyword arguments), filling gaps from the environment.

        `source` names where `values` came from in error messages, e.g.
        ``"SERVERLESS_POOL setting"`` for Django, and `spell` how a setting's name is
        written there (Flask: ``SERVERLESS_POOL_MAX_SIZE`` for ``max_size``). An unknown
        name, in `values` or among the ``SERVERLESS_POOL_*`` environment variables, is an
        error with a suggestion.
        """
        values = dict(values or {})
        env = os.environ if environ is None else environ
        unknown = sorted(set(values) - set(_BY_NAME))
        if unknown:
            raise SettingsError(unknown_name_message(unknown[0], _BY_NAME, source))
        check_environment(env)
        resolved: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for setting in SCHEMA:
            if setting.name in values:
                where = spell(setting.name) if spell else setting.name
                resolved[setting.name] = _parse(setting, values[setting.name], source, where)
                origins[setting.name] = f"{source} {where}"
            elif setting.env_var in env:
                raw = env[setting.env_var]
                if not raw.strip():
                    raise SettingsError(
                        f"environment variable {setting.env_var} is empty;"
                        " unset it to use the default or give it a value"
                    )
                resolved[setting.name] = _parse(setting, raw, "environment variable")
                origins[setting.name] = f"environment variable {setting.env_var}"
            else:
                resolved[setting.name] = setting.default
                origins[setting.name] = "the default"
        return cls._derive(resolved, origins, env)

    @classmethod
    def _derive(
        cls, resolved: dict[str, Any], origins: Mapping[str, str], env: Mapping[str, str]
    ) -> PoolSettings:
        on_lambda = running_on_lambda(env)
        direct = resolved["proxy_mode"] == "direct"
        if resolved["ping_after_idle"] is _DERIVED:
            # Never frozen: the environment's kernel handles every FIN and RST as it
            # arrives, so the socket check already sees a session the server ended.
            resolved["ping_after_idle"] = 60.0 if running_on_managed_instances(env) else 5.0
        if resolved["max_size"] is _DERIVED:
            resolved["max_size"] = 1 if on_lambda else 4
        if resolved["idle_session_timeout"] is _DERIVED:
            resolved["idle_session_timeout"] = 900.0 if on_lambda and direct else 0.0
        if resolved["reset_on_return"] is _DERIVED:
            resolved["reset_on_return"] = "always" if direct else "never"
        elif resolved["reset_on_return"] == "always" and not direct:
            raise SettingsError(
                f"reset_on_return='always' ({origins['reset_on_return']}) cannot be used with"
                f" proxy_mode={resolved['proxy_mode']!r} ({origins['proxy_mode']}): behind a"
                " proxy DISCARD ALL would reset whichever server session runs it, or pin one."
                " Leave reset_on_return unset; Python-side state is still restored"
            )

        def both(low: str, high: str) -> str:
            return (
                f"{low} ({resolved[low]}, {origins[low]}) must not exceed"
                f" {high} ({resolved[high]}, {origins[high]})"
            )

        if resolved["min_size"] > resolved["max_size"]:
            raise SettingsError(both("min_size", "max_size"))
        if resolved["retry_backoff"] > resolved["retry_backoff_max"]:
            raise SettingsError(both("retry_backoff", "retry_backoff_max"))
        if resolved["secret_arn"] and resolved["iam_auth"]:
            raise SettingsError(
                f"secret_arn ({origins['secret_arn']}) and iam_auth ({origins['iam_auth']})"
                " are both set: a connection logs in either with the secret's password or"
                " with an IAM token; keep one"
            )
        return cls(**resolved)

    def replace(self, **changes: object) -> PoolSettings:
        """A copy with `changes` validated through the schema."""
        parsed = {k: _parse(_known(k), v, "keyword argument") for k, v in changes.items()}
        return type(self)(**{**self.as_dict(), **parsed})

    def as_dict(self) -> dict[str, object]:
        return {field: getattr(self, field) for field in _FIELDS}

    @property
    def uses_session_state(self) -> bool:
        """Whether the pool may set session parameters at connect time."""
        return self.proxy_mode == "direct"

    @property
    def session_reset(self) -> bool:
        """Whether every returned connection gets ``DISCARD ALL``."""
        return self.reset_on_return == "always" and self.proxy_mode == "direct"

    def session_state_warnings(self) -> list[str]:
        """Settings that need session state, which a proxy mode does not keep.

        Behind PgBouncer in transaction mode or RDS Proxy the pool sends nothing that
        would outlive a transaction, so these are not applied; the check commands say so.
        """
        if self.proxy_mode == "direct":
            return []
        warnings = [
            f"{name}={getattr(self, name):g} is not applied with proxy_mode={self.proxy_mode}:"
            f" session parameters do not survive a transaction behind a proxy; set it on the"
            f" role instead (ALTER ROLE ... SET {name} = ...)"
            for name in (
                "statement_timeout",
                "idle_in_transaction_session_timeout",
                "idle_session_timeout",
            )
            if getattr(self, name)
        ]
        if self.prepare_threshold is not None and self.proxy_mode == "pgbouncer-transaction":
            warnings.append(
                f"prepare_threshold={self.prepare_threshold} prepares statements, which a"
                " transaction-mode PgBouncer before 1.21 (or without max_prepared_statements)"
                " loses between transactions; set prepare_threshold=none"
            )
        return warnings


#: The fields of `PoolSettings`, in the order of their declaration.
_FIELDS: Final = tuple(PoolSettings.__annotations__)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a ``SERVERLESS_POOL_*`` environment variable that nothing reads (a typo).

    A misspelt variable would otherwise be ignored in silence, and the setting it meant
    left at its default.
    """
    env = os.environ if environ is None else environ
    known = {s.env_var for s in SCHEMA} | {ENV_PREFIX + name for name in OTHER_ENV_VARS}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            raise SettingsError(
                unknown_name_message(
                    name, known, "environment variable", quote=False, known_as="variables"
                )
            )


def _known(name: str) -> Setting:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SettingsError(unknown_name_message(name, _BY_NAME, "keyword argument")) from None


def _parse(setting: Setting, value: object, source: str, where: str | None = None) -> Any:
    try:
        return setting.parse(value)
    except ValueError as err:
        if where is None:
            where = setting.env_var if source == "environment variable" else setting.name
        raise SettingsError(f"{source} {where}: {err}, got {show_value(value)}") from None


def show_value(value: object) -> str:
    """A value for an error message, shortened (values here are never secrets)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_name_message(
    name: object,
    known: Iterable[str],
    what: str,
    *,
    quote: bool = True,
    known_as: str = "settings",
) -> str:
    """``unknown <what> 'name'; did you mean 'close'?`` (or the list of known names).

    Shared by the core and the integrations, each naming its own source in `what`.
    """
    show = repr if quote else str
    message = f"unknown {what} {show(name)}"
    import difflib  # only for this message: not worth its import time at start

    close = difflib.get_close_matches(str(name), sorted(known), n=1)
    if close:
        return f"{message}; did you mean {show(close[0])}?"
    return f"{message}; known {known_as}: {', '.join(sorted(known))}"
