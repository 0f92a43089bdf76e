"""A local server speaking the AWS API (moto in server mode), for credential tests.

`MotoServer` starts ``moto.server`` in a subprocess on a free port on 127.0.0.1, with
request recording on, so a test can count the calls that really reached "AWS"
(`calls()`). Point boto3 at it with the variables of `environ()` (``AWS_ENDPOINT_URL``
and throwaway credentials). moto is a test dependency, never a runtime one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .postgres import free_port

__all__ = ["MotoServer"]

REGION = "eu-west-1"


class MotoServer:
    """moto's server on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="serverless-pool-moto-"))
        self._recording = self._dir / "recording.jsonl"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3 at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "MOTO_ENABLE_RECORDING": "true",
            "MOTO_RECORDER_FILEPATH": str(self._recording),
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        for path in self._dir.glob("*"):
            path.unlink()
        self._dir.rmdir()

    def calls(self, target: str) -> int:
        """How many requests with ``X-Amz-Target: <target>`` (e.g.
        ``secretsmanager.GetSecretValue``) the server received so far."""
        if not self._recording.exists():
            return 0
        count = 0
        for line in self._recording.read_text().splitlines():
            headers = json.loads(line).get("headers", {})
            found = {k.lower(): v for k, v in headers.items()}.get("x-amz-target")
            count += found == target
        return count
