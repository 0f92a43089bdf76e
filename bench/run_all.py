"""Run every benchmark and print its table (Markdown, as in the README).

    python bench/run_all.py [--quick] [--only core,django,flask,reset,fleet]

Each benchmark starts its own throwaway PostgreSQL on 127.0.0.1 and measures its
strategies side by side in one run; the numbers are ratios within a table, so compare
rows of one table, not tables across machines.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = {
    "core": "bench_core",
    "django": "bench_django",
    "flask": "bench_flask",
    "reset": "bench_reset",
    "fleet": "bench_fleet",
}


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (their keys, in order, are the columns)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:,.2f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="run every serverless-pool benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",")]
    if len(names) > 1:
        # One process per benchmark: Django's settings, CPython's specialized bytecode
        # and the collector's heap of one must not carry over into the next.
        for name in names:
            argv = [sys.executable, __file__, "--only", name] + ["--quick"] * args.quick
            if subprocess.call(argv) != 0:
                return 1
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    name = names[0]
    module = importlib.import_module(BENCHMARKS[name])
    started = time.monotonic()
    rows = module.run(quick=args.quick)
    print(f"\n## {name} ({time.monotonic() - started:.0f} s)\n", flush=True)
    # a benchmark's own formatter takes its rows; an imported one may not
    formatter = getattr(module, "format_table", markdown)
    if getattr(formatter, "__module__", None) != module.__name__:
        formatter = markdown
    print(formatter(rows), flush=True)
    if name == "core":
        print(f"\nimport serverless_pool after psycopg: +{module.import_overhead_ms():.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
