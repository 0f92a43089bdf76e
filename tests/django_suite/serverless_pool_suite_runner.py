"""Django's DiscoverRunner, writing the outcome of every test to a JSON file.

With ``--parallel`` the workers send their events to the main process, which replays
them on its result object: the recording result below sees every test, whichever
process ran it. The file (``DJANGO_SUITE_RESULTS``) maps test ids to one of
``ok``, ``fail``, ``error``, ``skip``, ``expected-failure``, ``unexpected-success``.
"""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.test.runner import DiscoverRunner

_BAD = ("fail", "error", "unexpected-success")


class RecordingResult(unittest.TextTestResult):
    """A TextTestResult that also remembers each test's outcome by its id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.details: dict[str, str] = {}

    def _record(self, test: Any, outcome: str, detail: str = "") -> None:
        key = test.id()
        # A test whose subtest failed stays failed whatever comes after.
        if self.outcomes.get(key) in _BAD and outcome not in _BAD:
            return
        self.outcomes[key] = outcome
        if detail:
            self.details[key] = detail[-3000:]

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._record(test, "ok")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error", self._exc_info_to_string(err, test))

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "fail", self._exc_info_to_string(err, test))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skip", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "expected-failure")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected-success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            detail = f"{subtest}: {self._exc_info_to_string(err, test)}"
            self._record(test, "fail" if failed else "error", detail)

    def stopTestRun(self) -> None:
        super().stopTestRun()
        path = os.environ.get("DJANGO_SUITE_RESULTS")
        if path:
            with open(path, "w") as f:
                json.dump({"outcomes": self.outcomes, "details": self.details}, f, indent=1)


class RecordingRunner(DiscoverRunner):
    """DiscoverRunner whose result records every outcome (see the module docstring)."""

    def get_resultclass(self) -> Any:
        return super().get_resultclass() or RecordingResult
