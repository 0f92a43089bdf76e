"""``DATABASES[...]["OPTIONS"]`` on our ENGINE behave as on Django's own backend.

Django's own PostgreSQL backend is the witness: where it raises, we raise the same class
with the same message; what it exposes (``connection.cursor_factory``), we expose. And
an ``OPTIONS`` change reaches the pool: a new pool for the new options, the old one
closed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.postgresql import base as django_base
from django_serverless_pool.release import pool_of

from serverless_pool.connection import PooledCursorMixin
from serverless_pool.testing.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True)


class MyCursor(django_base.Cursor):
    """A user's cursor class, as in OPTIONS["cursor_factory"]."""


@pytest.fixture
def wrappers(pools_closed_after: None) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """``make(**options)``: our wrapper and Django's own, both with these OPTIONS."""
    made: list[Any] = []

    def make(**options: Any) -> tuple[Any, Any]:
        ours = connections["default"].copy()
        ours.settings_dict = copy.deepcopy(ours.settings_dict)
        ours.settings_dict["OPTIONS"].update(options)
        settings = copy.deepcopy(ours.settings_dict)
        stock = django_base.DatabaseWrapper(settings, alias="django_stock")
        made.extend((ours, stock))
        return ours, stock

    yield make
    for wrapper in made:
        wrapper.close()


def _raised(action: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:  # noqa: PT011 (compared just below)
        action()
    return caught.value


def test_an_options_change_reaches_the_next_connection_through_a_new_pool() -> None:
    wrapper = connections["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    before = pool_of("default")
    assert wrapper.connection.cursor_factory is django_base.Cursor
    wrapper.close()
    options = wrapper.settings_dict["OPTIONS"]
    try:
        options["server_side_binding"] = True
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert wrapper.connection.cursor_factory is django_base.ServerBindingCursor
        assert pool_of("default") is not before
        assert before.closed
    finally:
        wrapper.close()
        options.pop("server_side_binding")
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert wrapper.connection.cursor_factory is django_base.Cursor
    wrapper.close()


def test_a_role_that_does_not_exist_fails_as_with_django(wrappers: Any) -> None:
    ours, stock = wrappers(assume_role="serverless_pool_no_such_role")
    theirs, mine = _raised(stock.connect), _raised(ours.connect)
    assert type(theirs) is psycopg.errors.InvalidParameterValue
    assert type(mine) is type(theirs)
    assert str(mine) == str(theirs) == 'role "serverless_pool_no_such_role" does not exist'


def test_a_role_the_user_may_not_assume_fails_as_with_django(
    wrappers: Any, postgres: PostgresServer
) -> None:
    postgres.execute(
        "DO $$ BEGIN CREATE ROLE serverless_pool_other_role;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    ours, stock = wrappers(assume_role="serverless_pool_other_role")
    theirs, mine = _raised(stock.connect), _raised(ours.connect)
    assert type(theirs) is psycopg.errors.InsufficientPrivilege
    assert (type(mine), str(mine)) == (type(theirs), str(theirs))


def test_an_invalid_isolation_level_gets_djangos_error(wrappers: Any) -> None:
    ours, stock = wrappers(isolation_level=-1)
    theirs, mine = _raised(stock.ensure_connection), _raised(ours.ensure_connection)
    assert type(theirs) is ImproperlyConfigured
    assert (type(mine), str(mine)) == (type(theirs), str(theirs))


def test_the_users_cursor_factory_stays_the_connections_and_keeps_the_pools_hooks(
    wrappers: Any, postgres: PostgresServer
) -> None:
    ours, stock = wrappers(cursor_factory=MyCursor)
    stock.connect()
    ours.connect()
    assert stock.connection.cursor_factory is MyCursor
    assert ours.connection.cursor_factory is MyCursor
    with ours.cursor() as cursor:
        assert isinstance(cursor.cursor, MyCursor)
        assert isinstance(cursor.cursor, PooledCursorMixin)
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    ours.close()
    # The hooks at work: the server ends the session between the borrow and the first
    # statement, and the statement still runs, on a new session.
    ours.ensure_connection()
    postgres.terminate_backends(pids=[pid])
    with ours.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid
