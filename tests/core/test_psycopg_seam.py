"""The one seam: every private name of psycopg the pool relies on exists in the installed
psycopg, and no code outside `serverless_pool._psycopg` uses one."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import psycopg
import pytest

from serverless_pool import ServerlessPool
from serverless_pool._psycopg import (
    CONNECTION_ATTRIBUTES,
    CURSOR_ATTRIBUTES,
    ERROR_ATTRIBUTES,
    PGCONN_ATTRIBUTES,
    PREPARED_ATTRIBUTES,
    PRIVATE_NAMES,
)

ROOT = Path(__file__).resolve().parents[2]
SEAM = ROOT / "serverless_pool" / "_psycopg"
# What psycopg's internals look like from outside: its private modules, generators and
# the private attributes of its objects.
PRIVATE_USE = re.compile(
    r"psycopg\._|psycopg\.generators|\._pgconn\b|_notifies_backlog|\._prepared\b"
    r"|\._adapters\b|\._pipeline\b|\._tpc\b|_exec_command|_start_query|_maybe_prepare_gen"
)


@pytest.mark.parametrize(("module", "name", "attribute"), PRIVATE_NAMES)
def test_each_private_name_the_seam_uses_exists(
    module: str, name: str, attribute: str | None
) -> None:
    obj = getattr(importlib.import_module(module), name)
    if attribute is not None:
        assert hasattr(obj, attribute), f"{module}.{name}.{attribute}"


def test_the_attributes_psycopg_sets_on_its_objects_exist(pool: ServerlessPool) -> None:
    with pool.connection() as conn:
        for attribute in CONNECTION_ATTRIBUTES:
            assert hasattr(conn, attribute), attribute
        for attribute in PREPARED_ATTRIBUTES:
            assert hasattr(conn._prepared, attribute), attribute
        for attribute in PGCONN_ATTRIBUTES:
            assert hasattr(conn.pgconn, attribute), attribute
        with conn.cursor() as cursor:
            for attribute in CURSOR_ATTRIBUTES:
                assert hasattr(cursor, attribute), attribute
        with pytest.raises(psycopg.errors.DivisionByZero) as caught:
            conn.execute("SELECT 1 / 0")
        # The seam builds an error of the same class from these (StatementOutcomeUnknown).
        for attribute in ERROR_ATTRIBUTES:
            assert getattr(caught.value, attribute), attribute
        parameters = inspect.signature(psycopg.Error.__init__).parameters
        assert {"info", "encoding"} <= set(parameters)


def test_psycopg_keeps_one_notification_queue_for_the_connections_life(
    pool: ServerlessPool,
) -> None:
    """The pool reads psycopg's queue through an alias taken at set-up."""
    with pool.connection() as conn:
        queue = conn._notifies_backlog
        assert conn._sp_notifies is queue  # type: ignore[attr-defined]
        list(conn.notifies(timeout=0.01))
        assert conn._notifies_backlog is queue


def test_no_code_outside_the_seam_touches_psycopgs_private_names() -> None:
    offenders = []
    for folder in ("serverless_pool", "integrations", "bench", "example_projects"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if SEAM in path.parents:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE_USE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_seam_replaces_no_method_at_import_or_run_time() -> None:
    for path in sorted((ROOT / "serverless_pool").rglob("*.py")):
        text = path.read_text()
        allowed = ("cursor.py", "snapshot_runtime.py")
        assert "method-assign" not in text or path.name in allowed, path
    # The one assignment left chooses the fast execute() when a cursor class is made.
    cursor = (SEAM / "cursor.py").read_text()
    assert cursor.count("method-assign") == 1
