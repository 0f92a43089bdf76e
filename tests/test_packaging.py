"""The distribution as a user gets it: the wheel and the sdist `python -m build` makes install
into an empty virtual environment and import, and a SAM-style install of an example
project's requirements.txt finds the wheel in its wheels/ folder.

These install from the package index (through uv's cache when the test command set one up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import serverless_pool

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import serverless_pool, django_serverless_pool, flask_serverless_pool"

pytestmark = pytest.mark.slow


def _uv() -> str:
    found = Path(sys.executable).with_name("uv")
    return str(found) if found.exists() else "uv"


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of this checkout (a copy, so nothing is written into it)."""
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    shutil.copytree(
        ROOT, source,
        ignore=shutil.ignore_patterns(".venv*", ".git", "__pycache__", "*_cache", "dist", "wheels"),
    )  # fmt: skip
    out = work / "dist"
    _run([sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(out), str(source)])
    return out


def _empty_venv(path: Path) -> Path:
    _run([_uv(), "venv", "--quiet", "--python", sys.executable, str(path)])
    python = path / "bin" / "python"
    # Empty: nothing of ours, nor psycopg, is importable before the install.
    probe = subprocess.run([str(python), "-c", "import psycopg"], capture_output=True)
    assert probe.returncode != 0
    return python


def test_the_wheel_holds_the_three_packages_and_nothing_else(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"serverless_pool-{serverless_pool.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = f"serverless_pool-{serverless_pool.__version__}.dist-info"
    assert tops == {"serverless_pool", "django_serverless_pool", "flask_serverless_pool", dist_info}
    for package in ("serverless_pool", "django_serverless_pool", "flask_serverless_pool"):
        assert f"{package}/py.typed" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    # Ranges, never pins, for the library's users.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires
    pinned = [line for line in requires if "==" in line.split(";")[0]]
    assert not pinned, requires


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_built_distribution_installs_and_imports_in_an_empty_venv(
    dist: Path, tmp_path: Path, kind: str
) -> None:
    (artifact,) = dist.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    python = _empty_venv(tmp_path / "venv")
    _run([_uv(), "pip", "install", "--quiet", "--python", str(python),
          f"serverless-pool[django,flask,lambda] @ {artifact.as_uri()}"])  # fmt: skip
    done = _run(
        [str(python), "-c", f"{IMPORTS}; print(serverless_pool.__version__)"],
        cwd=tmp_path,  # not the checkout: its folders would shadow the install
    )
    assert done.stdout.strip() == serverless_pool.__version__
    cli = _run([str(tmp_path / "venv" / "bin" / "serverless-pool"), "--help"], cwd=tmp_path)
    assert "check" in cli.stdout


@pytest.mark.parametrize("app", ["flask_app", "django_app"])
def test_an_example_requirements_file_installs_the_wheel_from_its_wheels_folder(
    dist: Path, tmp_path: Path, app: str
) -> None:
    # What `sam build` does with the example's CodeUri: pip, run from another folder,
    # installs requirements.txt into a target folder.
    code = tmp_path / "code"
    (code / "wheels").mkdir(parents=True)
    shutil.copy(ROOT / "example_projects" / app / "requirements.txt", code)
    for wheel in dist.glob("*.whl"):
        shutil.copy(wheel, code / "wheels")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "package"
    env = {**os.environ, "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), "-r", str(code / "requirements.txt")],
        cwd=elsewhere, env=env,
    )  # fmt: skip
    framework = "flask_serverless_pool" if app == "flask_app" else "django_serverless_pool"
    installed = sorted(p.name for p in target.iterdir())
    assert framework in installed
    assert "mangum" in installed
    assert "apig_wsgi.py" in installed or "apig_wsgi" in installed
    done = _run(
        [sys.executable, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(target)!r}); import {framework}, serverless_pool;"
         " print(serverless_pool.__file__)"],
        cwd=elsewhere,
    )  # fmt: skip
    assert done.stdout.strip().startswith(str(target))
