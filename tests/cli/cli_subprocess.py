"""Run the ``serverless-pool`` command as users do: a separate process, a clean env."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would change the pool's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SERVERLESS_POOL_", "AWS_LAMBDA_", "PG"))
    }
    env.update(extra)
    return env


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_pool.cli", *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else clean_env(),
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
