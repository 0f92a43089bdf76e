"""The progress bar: drawn on a terminal, one line per run anywhere else."""

from __future__ import annotations

import io

from serverless_pool.fleet.progress import ProgressBar


def test_on_a_terminal_one_line_is_redrawn_and_cleared_at_the_end() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, tty=True, width=10)
    bar("burst: serverless-pool", 0, 200)
    bar("burst: serverless-pool", 100, 200)  # within a tenth of a second: not redrawn
    bar("scale: serverless-pool", 150, 200)
    bar("scale: serverless-pool", 200, 200)
    bar.close()
    text = stream.getvalue()
    assert "\n" not in text
    assert text.count(" requests ") == 3  # drawn three times, then cleared
    assert "[#####-----]  50%" not in text
    assert "[########--]  75%  150/200 requests" in text
    assert "[##########] 100%  200/200 requests" in text
    assert text.endswith("\r")


def test_elsewhere_one_line_per_run() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, tty=False)
    for done in range(5):
        bar("burst: module-level", done, 10)
    bar("burst: serverless-pool", 6, 10)
    bar.close()
    assert stream.getvalue() == "running burst: module-level\nrunning burst: serverless-pool\n"
