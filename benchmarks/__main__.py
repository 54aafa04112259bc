"""``python -m benchmarks [--quick] [--only NAME ...]``: run the benchmarks, print one table,
write ``benchmarks/results.json``.

Every figure is measured against its baseline in the same run (see ``docs/benchmarks.md``).
Exit status is 0 even when a target is missed: the table says which, and why is in the docs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from . import convert, cookies, drain, e2e, enqueue, latency, middleware_overhead, rss
from .harness import Result, Scale, table

RESULTS = Path(__file__).resolve().parent / "results.json"

#: Name → benchmark, in the order of the table in issue 6.
BENCHMARKS: dict[str, Callable[[Scale], list[Result]]] = {
    "asgi": middleware_overhead.run_asgi,
    "wsgi": middleware_overhead.run_wsgi,
    "landing": cookies.run_landing,
    "read": cookies.run_read,
    "convert": convert.run,
    "latency": latency.run,
    "enqueue": enqueue.run,
    "drain": drain.run,
    "rss": rss.run,
    "e2e": e2e.run,
}


def machine() -> dict[str, str]:
    """The facts that make numbers comparable (or not)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": " ".join(f"{x:.2f}" for x in load),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; print the table; write the JSON results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    # The engines' start-up warnings (dry run) are expected here; keep the table readable.
    logging.getLogger("tracklayer").setLevel(logging.ERROR)
    scale = Scale("quick" if args.quick else "full")
    names = args.only or list(BENCHMARKS)
    facts = machine()
    print(f"TrackLayer benchmarks ({scale.mode}) — {facts['date']}, nproc={facts['nproc']}, "
          f"Python {facts['python']}, load {facts['loadavg']}", file=sys.stderr)
    results: list[Result] = []
    started = time.monotonic()
    for name in names:
        began = time.monotonic()
        print(f"  {name} ...", end="", flush=True, file=sys.stderr)
        results.extend(BENCHMARKS[name](scale))
        print(f" {time.monotonic() - began:.0f} s", file=sys.stderr)
    facts["duration_seconds"] = f"{time.monotonic() - started:.0f}"
    print(table(results))
    args.output.write_text(json.dumps(
        {"mode": scale.mode, "machine": facts, "results": [r.to_json() for r in results]},
        indent=2,
    ) + "\n")
    missed = [r.name for r in results if r.passed is False]
    print(f"\n{len(results)} figures, {len(missed)} missed{': ' if missed else ''}"
          f"{', '.join(missed)}; written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
