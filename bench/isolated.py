"""How the request benchmarks time their strategies: one process each, taking turns.

Each strategy is set up and served by a process of its own, as on a real instance,
where one process runs one kind of connection. Sharing one interpreter between
strategies skews the comparison: CPython specializes the bytecode of psycopg, Django
and Flask for the types it meets, one type per site, so code shared by strategies
whose connection and cursor classes differ keeps being re-specialized for whichever
ran last. Measured on this machine, the same pool looked 1.03x to 1.11x a held
connection depending only on which other strategies shared its process; alone in its
process, 1.06x to 1.08x in every run.

The processes take turns: in each round every strategy serves one batch of requests
while the others wait, in a shuffled order, so the machine's drift hits all of them
alike (`rounds.py` turns the per-round medians into paired ratios). Processes are
forked, so a strategy's setup may be any callable, closures included, and they inherit
the benchmark's CPU pinning.
"""

from __future__ import annotations

import gc
import multiprocessing
import random
import statistics
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

__all__ = ["Setup", "Timings", "measure_in_processes"]

#: Runs in the strategy's process: returns its request and how to clean up after it.
Setup = Callable[[], tuple[Callable[[], object], Callable[[], object]]]


@dataclass
class Timings:
    """What one strategy's process measured."""

    samples: list[float] = field(default_factory=list)  # µs per request
    round_medians: list[float] = field(default_factory=list)  # µs, one per round


def measure_in_processes(
    setups: Mapping[str, Setup],
    rounds: int,
    batch: Callable[[str], int],
    *,
    warmup: int = 20,
    seed: int = 7,
) -> dict[str, Timings]:
    """Time every strategy in `setups` in its own process, `rounds` turns each.

    `batch(name)` is how many requests a strategy serves per turn. A strategy whose
    setup or request raises stops the run with its traceback.
    """
    context = multiprocessing.get_context("fork")
    workers: dict[str, tuple[multiprocessing.process.BaseProcess, Connection]] = {}
    try:
        for name, setup in setups.items():
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve, args=(setup, theirs, warmup), name=f"bench: {name}"
            )
            process.start()
            theirs.close()
            workers[name] = (process, ours)
            _answer(name, ours)  # set up and warm, before the next one starts
        timings = {name: Timings() for name in setups}
        order = list(setups)
        shuffle = random.Random(seed).shuffle
        for _ in range(rounds):
            shuffle(order)  # no strategy always runs right after the same one
            for name in order:
                pipe = workers[name][1]
                pipe.send(batch(name))
                timed: list[float] = _answer(name, pipe)
                timings[name].samples.extend(timed)
                timings[name].round_medians.append(statistics.median(timed))
        return timings
    finally:
        for name, (process, pipe) in workers.items():
            try:
                pipe.send(None)
                _answer(name, pipe)  # cleaned up
            except (OSError, EOFError, RuntimeError):
                pass
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


def _answer(name: str, pipe: Connection) -> list[float]:
    kind, payload = pipe.recv()
    if kind == "error":
        raise RuntimeError(f"benchmark strategy {name!r} failed in its process:\n{payload}")
    return payload  # type: ignore[no-any-return]


def _serve(setup: Setup, pipe: Connection, warmup: int) -> None:
    """The strategy's process: set up, warm up, then serve batches until told to stop."""
    close: Callable[[], object] | None = None
    try:
        request, close = setup()
        for _ in range(warmup):  # connections open, code paths specialized
            request()
        gc.collect()
        pipe.send(("ok", []))
        clock = time.perf_counter_ns
        while (count := pipe.recv()) is not None:
            timed = []
            for _ in range(count):
                start = clock()
                request()
                timed.append((clock() - start) / 1000)
            pipe.send(("ok", timed))
        closing, close = close, None
        closing()
        pipe.send(("ok", []))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    finally:
        if close is not None:
            close()
        pipe.close()
