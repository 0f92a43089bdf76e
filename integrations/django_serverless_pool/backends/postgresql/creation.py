"""Test databases: Django's PostgreSQL creation, with the alias's pool closed first.

``CREATE DATABASE ... TEMPLATE`` (the parallel test runner's clones) and ``DROP
DATABASE`` refuse to run while any session uses the database, and the pool keeps idle
sessions. Django 5.1 and later close their own pool there; this does the same for ours
on every version, 4.2 included.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import creation

__all__ = ["DatabaseCreation"]


class DatabaseCreation(creation.DatabaseCreation):
    """Closes the alias's pool before a test database is cloned or dropped."""

    def _clone_test_db(self, suffix: Any, verbosity: int, keepdb: bool = False) -> None:
        self.connection.close()
        self.connection.close_pool()
        parent: Any = super()  # private Django API, not in the type stubs
        parent._clone_test_db(suffix, verbosity, keepdb)

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        self.connection.close()
        self.connection.close_pool()
        parent: Any = super()
        parent._destroy_test_db(test_database_name, verbosity)
