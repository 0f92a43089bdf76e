"""An emulated function: the execution environments of one handler, as Lambda scales it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .instance import InvocationResult, LambdaInstance, ShutdownResult
from .snapstart import Snapshot

__all__ = ["EmulatedFunction", "InvocationCallback"]

#: Called with the result of every invocation (the command line prints one line each).
InvocationCallback = Callable[[InvocationResult], None]


class EmulatedFunction:
    """Routes each event to an environment with room for it, starting one if none has.

    :param max_instances: how many execution environments may exist; beyond that, an
        event waits for one to be free (at most `queue_timeout` seconds).
    :param freeze_idle: freeze an on-demand environment (SIGSTOP) as soon as it waits
        for its next event, as Lambda does.
    :param snapstart: new environments are restored from one SnapStart snapshot,
        taken at the first cold start, instead of each running init.
    :param max_concurrency: environments are Lambda Managed Instances environments with
        this many workers; an event goes to one with fewer events in flight.
    :param on_invocation: called with every `InvocationResult`.
    :param instance_options: passed to each `LambdaInstance` (``env``, ``cwd``,
        ``timeout``, ``extensions``, ``on_output``...).
    """

    def __init__(
        self,
        handler: str,
        *,
        max_instances: int = 1,
        freeze_idle: bool = True,
        queue_timeout: float = 30.0,
        snapstart: bool = False,
        max_concurrency: int | None = None,
        on_invocation: InvocationCallback | None = None,
        **instance_options: Any,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances: expected at least 1, got {max_instances!r}")
        if snapstart and max_concurrency is not None:
            raise ValueError("SnapStart does not apply to Lambda Managed Instances")
        self.handler = handler
        self.max_instances = max_instances
        self.freeze_idle = freeze_idle and max_concurrency is None
        self.queue_timeout = queue_timeout
        self.max_concurrency = max_concurrency
        self.on_invocation = on_invocation
        self._options = instance_options
        if max_concurrency is not None:
            self._options["max_concurrency"] = max_concurrency
        self.snapshot: Snapshot | None = (
            Snapshot(handler, **instance_options) if snapstart else None
        )
        self.instances: list[LambdaInstance] = []
        self._load: dict[str, int] = {}
        self._cond = threading.Condition()
        self._closed = False

    def invoke(self, event: Any, *, timeout: float | None = None) -> InvocationResult:
        instance = self._checkout()
        try:
            result = instance.invoke(event, timeout=timeout)
        finally:
            if self.freeze_idle and instance.alive:
                try:
                    instance.freeze()
                except RuntimeError:
                    instance.kill()
            with self._cond:
                self._load[instance.name] -= 1
                self._cond.notify_all()
        if self.on_invocation is not None:
            self.on_invocation(result)
        return result

    def _capacity(self) -> int:
        return self.max_concurrency or 1

    def _checkout(self) -> LambdaInstance:
        limit = time.monotonic() + self.queue_timeout
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the emulated function is closed")
                free = [i for i in self.instances if self._load[i.name] < self._capacity()]
                if free:
                    # The least busy environment: on-demand, any idle one (most recent
                    # first, as Lambda reuses warm environments); Managed Instances,
                    # the one with the most room.
                    chosen = min(reversed(free), key=lambda i: self._load[i.name])
                    self._load[chosen.name] += 1
                    return chosen
                if len(self.instances) < self.max_instances:
                    break
                left = limit - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no instance free within {self.queue_timeout} s"
                        f" (max_instances={self.max_instances})"
                    )
                self._cond.wait(left)
            instance = self._new_instance()
            self.instances.append(instance)
            self._load[instance.name] = 1
            return instance

    def _new_instance(self) -> LambdaInstance:
        if self.snapshot is not None:
            instance = LambdaInstance(self.handler, **self._options)
            instance._snapshot = self.snapshot
            instance._snapstart = True
            self.snapshot.instances.append(instance)
            return instance
        return LambdaInstance(self.handler, **self._options)

    def provision(self, count: int) -> list[LambdaInstance]:
        """Start `count` environments before any traffic and wait until they are ready.

        What a Managed Instances capacity provider does (and on-demand, provisioned
        concurrency): init runs ahead, every worker is waiting for an event, and no
        event pays for the environment's start (a Managed Instances worker's first event
        is still reported as its first).
        """
        started: list[LambdaInstance] = []
        for _ in range(count):
            with self._cond:
                if self._closed or len(self.instances) >= self.max_instances:
                    break
                instance = self._new_instance()
                self.instances.append(instance)
                self._load[instance.name] = 1  # taken while it starts
            try:
                instance.start()
                instance._fresh = False
                if instance.managed:
                    instance.wait_workers(self._capacity(), timeout=instance.init_timeout)
                elif self.freeze_idle:
                    instance.freeze()
            finally:
                with self._cond:
                    self._load[instance.name] -= 1
                    self._cond.notify_all()
            started.append(instance)
        return started

    def shutdown(self, instance: LambdaInstance, reason: str = "spindown") -> ShutdownResult:
        """End one environment as Lambda does (it leaves the function)."""
        with self._cond:
            if instance in self.instances:
                self.instances.remove(instance)
                self._load.pop(instance.name, None)
        result = instance.shutdown(reason)
        instance.close()
        return result

    def close(self) -> None:
        """Shut every environment down as Lambda would, and reap them."""
        with self._cond:
            self._closed = True
            instances, self.instances = self.instances, []
            self._cond.notify_all()
        for instance in instances:
            instance.close()
        if self.snapshot is not None:
            self.snapshot.close()

    def __enter__(self) -> EmulatedFunction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
