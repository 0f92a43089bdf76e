"""Run psycopg's own test suite on the connection a `ServerlessPool` hands out.

Run by ``scripts/psycopg-suite`` with the Python of a venv that has exactly the psycopg
release pinned below and this checkout (installed as an editable package) in it. It

1. takes psycopg's ``tests/`` at that release from a source given with ``--source`` (or
   ``PSYCOPG_SUITE_SOURCE``): a git repository holding the release's commit, a source
   tree, or a release archive; and checks it against the pin: the git tree id of
   ``tests/`` at the release's tag (and of one script of ``tools/`` they run), computed
   here from the files themselves, so any source is accepted only when its tests are
   byte for byte upstream's;
2. starts a throwaway PostgreSQL on 127.0.0.1 (`serverless_pool.testing.postgres`);
3. runs the sync test modules below with pytest (in ``--jobs`` processes, pytest-xdist),
   once per mode, with the plugin ``serverless_pool_fixtures`` lending every connection
   the suite's ``conn`` and ``conn_cls`` fixtures make from a `ServerlessPool`;
4. compares every test's outcome with ``expected.toml``, the checked-in list of
   expected differences, each with its reason.

It exits 1 when a test fails that the list does not name, when a listed test passes (the
list is out of date) or was not run, and when pytest itself fails. ``--toml`` prints the
unlisted failures as entries for ``expected.toml``, with an empty reason to fill in: only
tests inapplicable by construction belong there, never a divergence to fix.

Why not a download: psycopg's source release on the package index holds no tests, and
the public repository is out of reach of CI. Debian's source package of psycopg3 (whose
orig tarball is upstream's release) is listed in Debian's archive, but the archive this
machine reaches answers 404 for its files (psycopg3 and psycopg2 alike, while it serves
other packages' sources), so a developer passes a source they have.
"""

from __future__ import annotations

import argparse
import hashlib
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

#: The psycopg release whose tests run, and its commit.
PIN = {
    "version": "3.3.4",
    "tag": "3.3.4",
    "commit": "83f110367cdd249cc0a352e2246ecea9e878e5a0",
}
#: What of that commit the suite uses, with its git object id (tree or blob): the tests,
#: and the script the connection tests run their proxy with.
PATHS = {
    "tests": "6fcfcd0c860d790c5ce0d5d72e5373a196fbf486",
    "tools/pproxy_fix.py": "b60ec37eec6f1a40bc3c72d55eb81e0b5d2563e2",
}

#: psycopg's sync test modules for connections, cursors of every kind, COPY, pipelines,
#: prepared statements, transactions, notifications, errors, adapters and types. Left
#: out: the async twins (``*_async.py``), and modules of other things (libpq itself,
#: conninfo parsing, DNS, the pool, two-phase commit, typing with mypy, gevent).
MODULES = (
    "tests/test_adapt.py",
    "tests/test_connection.py",
    "tests/test_connection_info.py",
    "tests/test_copy.py",
    "tests/test_cursor.py",
    "tests/test_cursor_client.py",
    "tests/test_cursor_common.py",
    "tests/test_cursor_raw.py",
    "tests/test_cursor_server.py",
    "tests/test_errors.py",
    "tests/test_notify.py",
    "tests/test_pipeline.py",
    "tests/test_prepared.py",
    "tests/test_transaction.py",
    "tests/test_typeinfo.py",
    "tests/types/",
)
MODES = ("plain", "back-to-back")
BAD = ("failed", "error", "xpassed")
PASSED = ("passed", "xfailed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=os.environ.get("PSYCOPG_SUITE_SOURCE") or None,
        help="a git repository, source tree or release archive of psycopg"
        f" {PIN['version']} (default: $PSYCOPG_SUITE_SOURCE)",
    )
    parser.add_argument("--cache", required=True, type=Path, help="where the tests are kept")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--jobs", type=int, default=2, help="pytest-xdist processes")
    parser.add_argument("--summary", type=Path, help="write the counts as JSON here")
    parser.add_argument(
        "--toml", action="store_true", help="print unlisted failures as expected.toml entries"
    )
    parser.add_argument("tests", nargs="*", help="test ids or paths (default: the modules)")
    args = parser.parse_args(argv)

    import psycopg

    if psycopg.__version__ != PIN["version"]:
        raise SystemExit(f"psycopg {psycopg.__version__} is installed; the pin is {PIN['version']}")
    root = fetch_tests(args.source, args.cache)
    expected = load_expected(HERE / "expected.toml")
    selection = args.tests or list(MODULES)
    modes = MODES if args.mode == "both" else (args.mode,)

    summary: dict[str, Any] = {"psycopg": PIN["version"], "tests": selection, "modes": {}}
    status = 0
    with PostgresServer(max_connections=200) as server:
        server.execute("CREATE DATABASE psycopg_test")
        dsn = server.conninfo(SUPERUSER, SUPERUSER_PASSWORD, "psycopg_test")
        for mode in modes:
            started = time.monotonic()
            recorded = run_pytest(root, dsn, mode, selection, args.jobs)
            minutes = (time.monotonic() - started) / 60
            if recorded is None:
                status = 1
                continue
            counts, bad = report(mode, recorded, expected, selection, minutes, args.toml)
            summary["modes"][mode] = counts
            status |= bad
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1))
    return status


def fetch_tests(source: Path | None, cache: Path) -> Path:
    """A directory holding psycopg's ``tests/`` (and `PATHS`) at the pinned release, checked."""
    root = cache.resolve() / f"psycopg-{PIN['version']}"
    marker = root / "checked.json"
    if marker.exists() and json.loads(marker.read_text()) == PATHS:
        return root
    if source is None:
        raise SystemExit(
            f"psycopg's tests are not in {root}: pass --source (or set PSYCOPG_SUITE_SOURCE)"
            f" to a git repository holding commit {PIN['commit']} (tag {PIN['tag']}), a source"
            f" tree of that release, or its release archive (see the docstring of {__file__})"
        )
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "tests.tar"
        if (source / "objects").is_dir() or (source / ".git").exists():
            git_dir = source if (source / "objects").is_dir() else source / ".git"
            with archive.open("wb") as out:
                command = ["git", f"--git-dir={git_dir}", "archive", PIN["commit"], *PATHS]
                subprocess.run(command, stdout=out, check=True)
        elif source.is_dir():
            with tarfile.open(archive, "w") as tar:
                for path in PATHS:
                    tar.add(source / path, path)
        else:
            archive = source
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                name = _wanted(member.name)
                if name is not None:
                    member.name = name
                    members.append(member)
            tar.extractall(root, members=members, filter="data")
    for path, pinned in PATHS.items():
        target = root / path
        got = git_tree_id(target) if target.is_dir() else _git_blob_id(target)
        if got != pinned:
            shutil.rmtree(root)
            raise SystemExit(
                f"{source}: its {path} has git object id {got}, not {pinned}"
                f" (psycopg {PIN['tag']}): not upstream's of that release"
            )
    marker.write_text(json.dumps(PATHS))
    return root


def _wanted(name: str) -> str | None:
    """`name` without a release archive's top directory, if it is one of `PATHS`."""
    for candidate in (name, name.partition("/")[2]):
        if any(candidate == path or candidate.startswith(path + "/") for path in PATHS):
            return candidate
    return None


def git_tree_id(path: Path) -> str:
    """The id git gives the tree of `path` (files and directories, as committed)."""
    entries = []
    for child in path.iterdir():
        if child.is_symlink():
            mode, sha = b"120000", _git_object(b"blob", os.readlink(child).encode())
        elif child.is_dir():
            mode, sha = b"40000", bytes.fromhex(git_tree_id(child))
        else:
            executable = child.stat().st_mode & 0o100
            mode = b"100755" if executable else b"100644"
            sha = bytes.fromhex(_git_blob_id(child))
        # git orders a tree's entries by name, a directory's name as if it ended in "/"
        key = child.name.encode() + (b"/" if mode == b"40000" else b"")
        entries.append((key, mode + b" " + child.name.encode() + b"\0" + sha))
    body = b"".join(entry for _, entry in sorted(entries))
    return _git_object(b"tree", body).hex()


def _git_blob_id(path: Path) -> str:
    return _git_object(b"blob", path.read_bytes()).hex()


def _git_object(kind: bytes, body: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(body) + body, usedforsecurity=False).digest()


def run_pytest(
    root: Path, dsn: str, mode: str, selection: list[str], jobs: int
) -> dict[str, dict[str, Any]] | None:
    with tempfile.TemporaryDirectory() as tmp:
        results_path = Path(tmp) / "results.json"
        # psycopg's own pytest settings (its pyproject.toml, outside tests/)
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\naddopts = -ra\nfilterwarnings =\n    error\n")
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SERVERLESS_POOL_", "AWS_LAMBDA_", "PG", "PSYCOPG_"))
        }
        env.update(
            PSYCOPG_SUITE_MODE=mode,
            PSYCOPG_SUITE_RESULTS=str(results_path),
            PYTHONPATH=os.pathsep.join([str(HERE), str(root)]),
            PYTHONHASHSEED="0",
        )
        command = [
            sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(root),
            "-o", f"cache_dir={tmp}/cache", "-p", "serverless_pool_fixtures",
            "-n", str(jobs), "-q", "--no-header", "-p", "no:legacypath", "--timeout=120",
            "--tb=short",
            "--test-dsn", dsn, *selection,
        ]  # fmt: skip
        print(f"\n== psycopg {PIN['version']}, {mode}: pytest {' '.join(selection)}", flush=True)
        runner = subprocess.run(command, cwd=root, env=env, check=False)
        if not results_path.exists():
            print(f"pytest exited with {runner.returncode} and recorded nothing")
            return None
        recorded: dict[str, dict[str, Any]] = json.loads(results_path.read_text())
        return recorded


def load_expected(path: Path) -> dict[str, dict[str, str]]:
    """The listed differences: mode -> test id -> reason."""
    listed: dict[str, dict[str, str]] = {mode: {} for mode in MODES}
    for entry in tomllib.loads(path.read_text()).get("difference", []):
        for mode in entry.get("modes", MODES):
            listed[mode][entry["test"]] = entry["reason"]
    return listed


def report(
    mode: str,
    recorded: dict[str, dict[str, Any]],
    expected: dict[str, dict[str, str]],
    selection: list[str],
    minutes: float,
    toml: bool,
) -> tuple[dict[str, Any], int]:
    listed = expected[mode]
    counts: dict[str, int] = {}
    for result in recorded.values():
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    bad = sorted(test for test, result in recorded.items() if result["outcome"] in BAD)
    unexpected = [test for test in bad if test not in listed]
    # Only entries under the tests that ran can be judged.
    judged = [t for t in listed if any(t == s or t.startswith(s.rstrip("/") + "/") or
                                       t.startswith(s + "::") for s in selection)]  # fmt: skip
    passing = sorted(t for t in judged if recorded.get(t, {}).get("outcome") in PASSED)
    missing = sorted(t for t in judged if t not in recorded)
    for test in unexpected:
        result = recorded[test]
        print(f"UNEXPECTED {result['outcome'].upper()} ({mode}): {test}: {result.get('cause', '')}")
    for test in passing:
        print(f"LISTED BUT PASSES ({mode}; remove it from expected.toml): {test}")
    for test in missing:
        print(f"LISTED BUT NOT RUN ({mode}; renamed? remove it from expected.toml): {test}")
    ran = sum(counts.values())
    passed = sum(counts.get(outcome, 0) for outcome in PASSED)
    skipped = counts.get("skipped", 0)
    borrows = sum(result.get("borrows", 0) for result in recorded.values())
    in_pipeline = sum(result.get("in_pipeline", 0) for result in recorded.values())
    listed_bad = [t for t in bad if t in listed]
    print(
        f"\npsycopg {PIN['version']}'s tests on ServerlessPool connections, {mode}:"
        f" {ran} tests ran in {minutes:.1f} min: {passed} passed"
        f" ({counts.get('xfailed', 0)} of them failures psycopg itself expects),"
        f" {skipped} skipped, {len(listed_bad)} listed differences (expected.toml),"
        f" {len(unexpected)} unexpected failures; {borrows} borrows, {in_pipeline} of them"
        " lent in libpq pipeline mode"
    )
    if toml and unexpected:
        print(f"\n# unlisted failures ({mode}) as expected.toml entries: fill in each reason")
        for test in unexpected:
            cause = recorded[test].get("cause", "").replace("\n", " ")
            print(f'\n[[difference]]\ntest = "{test}"\nmodes = ["{mode}"]')
            print(f"# {cause}\nreason = ''")
    summary = {
        "ran": ran,
        "passed": passed,
        "skipped": skipped,
        "listed_differences": listed_bad,
        "unexpected": {t: recorded[t].get("cause", "") for t in unexpected},
        "borrows": borrows,
        "in_pipeline": in_pipeline,
        "minutes": round(minutes, 1),
    }
    return summary, 1 if unexpected or passing or missing else 0


if __name__ == "__main__":
    sys.exit(main())
