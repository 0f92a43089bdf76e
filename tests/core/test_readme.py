"""The README documents what the code does: every setting, the two commands, CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serverless_pool.settings import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table_with_its_variable() -> None:
    for setting in SCHEMA:
        assert f"| `{setting.name}` | `{setting.env_var}` |" in README, setting.name


def test_the_readme_settings_table_is_the_one_the_schema_prints() -> None:
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed in README


def test_ci_runs_the_readme_test_command() -> None:
    assert "./scripts/test " in README
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text().splitlines()
    assert "./scripts/demo " in README
    for script in ("scripts/test", "scripts/demo"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"


def test_both_commands_install_into_the_project_venv_only() -> None:
    for script in ("scripts/test", "scripts/demo"):
        lines = (ROOT / script).read_text().splitlines()
        assert ". scripts/install-python-deps.sh" in lines, script
        assert not [line for line in lines if "pip install" in line], script
    installer = (ROOT / "scripts" / "install-python-deps.sh").read_text()
    assert "uv sync --frozen" in installer
    assert "python3 -m venv .venv" in installer


def test_no_placeholder_is_left_in_the_readme() -> None:
    for marker in ("SETTINGS_TABLE", "BENCH_", "PROXIES_SECTION", "TODO"):
        assert marker not in README
