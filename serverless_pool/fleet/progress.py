"""A progress bar for the fleet's minute of running, on a terminal only.

A few lines of our own rather than a dependency: the simulation reports (what runs,
requests answered, requests planned) from many threads, and all this needs is one line
redrawn at most ten times a second. On anything but a terminal (a pipe, a CI log) it
prints one line per run instead, so logs stay readable.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

__all__ = ["ProgressBar"]

_REDRAW = 0.1


class ProgressBar:
    """``bar(label, done, total)``: draw the progress; ``bar.close()`` clears the line.

    :param stream: where to draw (the command line uses stderr).
    :param tty: whether `stream` is a terminal (default: ask it).
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None, width: int = 30) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._width = width
        self._label = ""
        self._drawn = 0.0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._visible = False

    def __call__(self, label: str, done: int, total: int) -> None:
        with self._lock:
            new_label = label != self._label
            self._label = label
            if not self._tty:
                if new_label:
                    print(f"running {label}", file=self._stream, flush=True)
                return
            now = time.monotonic()
            if not new_label and done < total and now - self._drawn < _REDRAW:
                return
            self._drawn = now
            self._stream.write("\r" + self.line(label, done, total, now - self._started))
            self._stream.flush()
            self._visible = True

    def line(self, label: str, done: int, total: int, elapsed: float) -> str:
        """The bar as drawn: ``[#####-----]  45%  123/270 requests  0:23  burst: ...``."""
        fraction = min(1.0, done / total) if total else 1.0
        filled = round(fraction * self._width)
        minutes, seconds = divmod(int(elapsed), 60)
        text = (
            f"[{'#' * filled}{'-' * (self._width - filled)}] {fraction:4.0%}"
            f"  {done}/{total} requests  {minutes}:{seconds:02d}  {label}"
        )
        columns = shutil.get_terminal_size((100, 20)).columns
        return text[: max(20, columns - 1)].ljust(max(20, columns - 1))

    def close(self) -> None:
        with self._lock:
            if self._tty and self._visible:
                self._stream.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1))
                self._stream.write("\r")
                self._stream.flush()
            self._visible = False
