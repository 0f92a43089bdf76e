"""An emulated function: several instances of one handler, as Lambda scales it."""

from __future__ import annotations

import threading
import time
from typing import Any

from .instance import InvocationResult, LambdaInstance

__all__ = ["EmulatedFunction"]


class EmulatedFunction:
    """Routes each event to an idle instance, starting one (a cold start) if none is idle.

    :param max_instances: the concurrency limit; beyond it, an event waits for an
        instance (at most `queue_timeout` seconds).
    :param freeze_idle: freeze an instance (SIGSTOP) as soon as it waits for its next
        event, as Lambda does.
    :param instance_options: passed to each `LambdaInstance`.
    """

    def __init__(
        self,
        handler: str,
        *,
        max_instances: int = 1,
        freeze_idle: bool = True,
        queue_timeout: float = 30.0,
        **instance_options: Any,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances: expected at least 1, got {max_instances!r}")
        self.handler = handler
        self.max_instances = max_instances
        self.freeze_idle = freeze_idle
        self.queue_timeout = queue_timeout
        self._options = instance_options
        self.instances: list[LambdaInstance] = []
        self._idle: list[LambdaInstance] = []
        self._cond = threading.Condition()
        self._closed = False

    def invoke(self, event: Any, *, timeout: float | None = None) -> InvocationResult:
        instance = self._checkout()
        try:
            return instance.invoke(event, timeout=timeout)
        finally:
            if self.freeze_idle and instance.alive:
                try:
                    instance.freeze()
                except RuntimeError:
                    instance.kill()
            with self._cond:
                self._idle.append(instance)
                self._cond.notify()

    def _checkout(self) -> LambdaInstance:
        limit = time.monotonic() + self.queue_timeout
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the emulated function is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self.instances) < self.max_instances:
                    instance = LambdaInstance(self.handler, **self._options)
                    self.instances.append(instance)
                    return instance
                left = limit - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no instance free within {self.queue_timeout} s"
                        f" (max_instances={self.max_instances})"
                    )
                self._cond.wait(left)

    def close(self, grace: float = 0.5) -> None:
        """Shut every instance down (SIGTERM, then SIGKILL after `grace`)."""
        with self._cond:
            self._closed = True
            instances, self.instances, self._idle = self.instances, [], []
        for instance in instances:
            instance.close(grace)

    def __enter__(self) -> EmulatedFunction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
