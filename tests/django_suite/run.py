"""Run Django's own test suite on ``django_serverless_pool.backends.postgresql``.

Run by ``scripts/django-suite`` with the Python of a venv that has one Django release
and this checkout (installed as an editable package) in it. It

1. fetches the source release of that exact Django version from the package index
   with pip, checked against the hashes of the lock file, and unpacks its ``tests/``
   (cached next to the venv);
2. starts a throwaway PostgreSQL on 127.0.0.1 (`serverless_pool.testing.postgres`);
3. runs Django's ``runtests.py`` on the test modules below, with the ``default`` and
   ``other`` aliases on our ENGINE, in parallel processes;
4. compares every test's outcome with ``expected.toml``, the checked-in list of
   expected differences, each with its reason.

It exits 1 when a test fails that the list does not name, when a listed test passes
(the list is out of date) or was not run, and when Django's runner itself fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from serverless_pool.testing.postgres import SUPERUSER, SUPERUSER_PASSWORD, PostgresServer

HERE = Path(__file__).resolve().parent

#: Django's test modules that touch the connection, the transaction or the backend.
MODULES = (
    # the ones the issue names
    "backends",
    "transactions",
    "queries",
    "select_for_update",
    "migrations",
    "timezones",
    "test_runner",
    "async",
    "db_functions",
    "model_fields",
    "basic",
    "get_or_create",
    "delete",
    "update",
    "bulk_create",
    "aggregation",
    "expressions",
    "postgres_tests",
    # request handling and threads: connections opened, closed and shared per request
    "handlers",
    "servers",
    "requests_tests",
    # schema changes, introspection, the shell, fixtures, database-backed features
    "schema",
    "introspection",
    "inspectdb",
    "indexes",
    "constraints",
    "db_utils",
    "dbshell",
    "fixtures",
    "cache",
    "sessions_tests",
    # queries of every kind (not serializers: its XML test times the parser, which only
    # measures how busy the machine is)
    "raw_query",
    "lookup",
    "datetimes",
    "dates",
    "db_typecasts",
    "prefetch_related",
)
BAD = ("fail", "error", "unexpected-success")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", required=True, type=Path, help="the venv's pinned requirements")
    parser.add_argument("--cache", required=True, type=Path, help="where the source is kept")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--summary", type=Path, help="write the counts as JSON here")
    parser.add_argument("modules", nargs="*", help=f"test labels (default: {' '.join(MODULES)})")
    args = parser.parse_args(argv)

    import django

    version = django.get_version()
    tests_dir = fetch_tests(version, args.lock, args.cache)
    expected = load_expected(HERE / "expected.toml", version)
    labels = args.modules or list(MODULES)

    started = time.monotonic()
    with PostgresServer(max_connections=200) as server, tempfile.TemporaryDirectory() as tmp:
        results_path = Path(tmp) / "results.json"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SERVERLESS_POOL_", "AWS_LAMBDA_", "PG", "DJANGO_"))
        }
        env.update(
            DJANGO_SUITE_PORT=str(server.port),
            DJANGO_SUITE_USER=SUPERUSER,
            DJANGO_SUITE_PASSWORD=SUPERUSER_PASSWORD,
            DJANGO_SUITE_RESULTS=str(results_path),
            PYTHONPATH=str(HERE),
            PYTHONHASHSEED="0",
        )
        command = [
            sys.executable,
            "-W",
            "ignore",
            "runtests.py",
            "--settings=serverless_pool_suite_settings",
            f"--parallel={args.parallel}",
            "--noinput",
            *labels,
        ]
        print(f"Django {version}: runtests.py {' '.join(labels)}", flush=True)
        runner = subprocess.run(command, cwd=tests_dir, env=env, check=False)
        if not results_path.exists():
            print(f"Django's runner exited with {runner.returncode} and recorded nothing")
            return 1
        recorded = json.loads(results_path.read_text())
    minutes = (time.monotonic() - started) / 60
    return report(version, recorded, expected, labels, minutes, args.summary)


def fetch_tests(version: str, lock: Path, cache: Path) -> Path:
    """Django's ``tests/`` directory of `version`, from its source release on the index."""
    tests_dir = cache / f"django-{version}" / "tests"
    if (tests_dir / "runtests.py").exists():
        return tests_dir
    requirement = pinned_requirement(lock, "django", version)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "django.txt"
        requirements.write_text(requirement + "\n")
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--no-binary", ":all:", "--require-hashes", "-r", str(requirements),
                "-d", tmp,
            ],
            check=True,
        )  # fmt: skip
        (archive,) = Path(tmp).glob("*.tar.gz")
        target = cache / f"django-{version}"
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(archive) as tar:
            prefix = tar.getnames()[0].split("/")[0] + "/tests/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = "tests/" + member.name[len(prefix) :]
            tar.extractall(target, members=members, filter="data")
    return tests_dir


def pinned_requirement(lock: Path, name: str, version: str) -> str:
    """The ``name==version --hash=...`` entry of a pip-compile style lock file."""
    lines = lock.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.lower().startswith(f"{name}=={version}"):
            entry = [line.rstrip(" \\")]
            for more in lines[i + 1 :]:
                if not more.startswith(" "):
                    break
                entry.append(more.strip().rstrip(" \\"))
            return " ".join(e for e in entry if e.startswith(("--hash", name)))
    raise SystemExit(f"{lock} pins no {name}=={version}: refresh it (scripts/django-suite --lock)")


def load_expected(path: Path, version: str) -> dict[str, str]:
    """The listed differences that apply to `version`: test id -> reason."""
    minor = ".".join(version.split(".")[:2])
    listed: dict[str, str] = {}
    for entry in tomllib.loads(path.read_text())["difference"]:
        if minor in entry.get("django", [minor]):
            listed[entry["test"]] = entry["reason"]
    return listed


def report(
    version: str,
    recorded: dict[str, Any],
    expected: dict[str, str],
    labels: list[str],
    minutes: float,
    summary_path: Path | None,
) -> int:
    outcomes: dict[str, str] = recorded["outcomes"]
    details: dict[str, str] = recorded["details"]
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    bad = sorted(test for test, outcome in outcomes.items() if outcome in BAD)
    unexpected = [test for test in bad if test not in expected]
    # Only entries under the labels that ran can be judged.
    judged = {t: r for t, r in expected.items() if any(_under(t, label) for label in labels)}
    passing = sorted(t for t in judged if outcomes.get(t) in ("ok", "expected-failure"))
    missing = sorted(t for t in judged if t not in outcomes)
    for test in unexpected:
        print(f"\nUNEXPECTED {outcomes[test].upper()}: {test}\n{details.get(test, '')}")
    for test in passing:
        print(f"LISTED BUT PASSES (remove it from expected.toml): {test}")
    for test in missing:
        print(f"LISTED BUT NOT RUN (renamed? remove it from expected.toml): {test}")
    listed_bad = [t for t in bad if t in expected]
    ran = len(outcomes)
    passed = counts.get("ok", 0) + counts.get("expected-failure", 0)
    print(
        f"\nDjango {version} on django_serverless_pool.backends.postgresql:"
        f" {ran} tests ran in {minutes:.1f} min: {passed} passed"
        f" ({counts.get('expected-failure', 0)} of them failures Django itself expects),"
        f" {counts.get('skip', 0)} skipped, {len(listed_bad)} listed differences"
        f" (expected.toml), {len(unexpected)} unexpected failures"
    )
    for test in listed_bad:
        print(f"  listed: {test}: {expected[test]}")
    if summary_path is not None:
        summary_path.write_text(
            json.dumps(
                {
                    "django": version,
                    "modules": labels,
                    "ran": ran,
                    "passed": passed,
                    "skipped": counts.get("skip", 0),
                    "skip_reasons": _skip_reasons(outcomes, details),
                    "listed_differences": listed_bad,
                    "unexpected": unexpected,
                    "minutes": round(minutes, 1),
                },
                indent=1,
            )
        )
    return 1 if unexpected or passing or missing else 0


def _skip_reasons(outcomes: dict[str, str], details: dict[str, str]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for test, outcome in outcomes.items():
        if outcome == "skip":
            reason = details.get(test, "")
            reasons[reason] = reasons.get(reason, 0) + 1
    return dict(sorted(reasons.items(), key=lambda item: -item[1]))


def _under(test: str, label: str) -> bool:
    return test == label or test.startswith(label + ".")


if __name__ == "__main__":
    sys.exit(main())
