"""Memory while X is down: RSS growth of a process that backlogs 1,000,000 conversions.

A child process (clean interpreter, so nothing else skews its RSS) starts an engine with a
SQLite outbox and a background sender pointed at a closed port on 127.0.0.1, so every POST
fails and rows go back to the outbox to retry. It then hands off conversions in request-
sized batches and reports ``VmRSS`` (and the peak ``VmHWM``) from ``/proc/self/status``:
after the first hand-off (engine, sender thread and HTTP client all started) and at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import apps
from .harness import Result, Scale, Stats, Target
from .servers import REPO, free_port

NAME = "rss"
BATCH = 1_000


def run(scale: Scale) -> list[Result]:
    """RSS growth (MB) over the backlog, one child process per repetition."""
    n = scale.pick(smoke=3_000, quick=50_000, full=1_000_000)
    reps = scale.pick(smoke=1, quick=1, full=1)
    reports = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="tracklayer-bench-") as tmp:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.rss", str(n), str(Path(tmp) / "outbox.db")],
                cwd=REPO, capture_output=True, text=True, check=True,
                env={**os.environ, "X_ADS_BEARER_TOKEN": apps.X_TOKEN},
            ).stdout
            reports.append(json.loads(out.strip().splitlines()[-1]))
    growth = Stats.of([(r["end_kb"] - r["start_kb"]) / 1024 for r in reports])
    peak = max((r["peak_kb"] - r["start_kb"]) / 1024 for r in reports)
    last = reports[-1]
    return [
        Result(
            name=NAME,
            figure=f"RSS growth with {n:,} conversions backlogged while X is down",
            stats=growth,
            unit="MB",
            target=Target("<=", 50),
            baseline="RSS after the first hand-off",
            detail=(
                f"{last['start_kb'] / 1024:.0f} → {last['end_kb'] / 1024:.0f} MB, "
                f"peak +{peak:.1f} MB; {last['rows']:,} rows waiting "
                f"({last['retrying']:,} failed at least once); {reps} run(s)"
            ),
        )
    ]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(n: int, path: str) -> dict[str, int]:
    """The child's work: backlog ``n`` conversions with X unreachable; its RSS report."""
    import time

    from tracklayer_middleware.conversion import build_conversion
    from tracklayer_middleware.engine import TrackLayer

    from .convert import purchase

    engine = TrackLayer(apps.settings(
        outbox=f"sqlite:///{path}", delivery="background", environment="production",
        api_base_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=2.0,
        retry_base_seconds=0.05, retry_max_seconds=0.5,
    ))
    ids = itertools.count()

    def handoff(count: int) -> None:
        engine.handoff([
            build_conversion(engine.settings, "purchase", attribution=apps.TWCLID,
                             **purchase(ids))
            for _ in range(count)
        ])

    handoff(BATCH)
    time.sleep(0.5)  # let the sender fail a first time: client and thread fully up
    start = _status_kb("VmRSS")
    for done in range(BATCH, n, BATCH):
        handoff(min(BATCH, n - done))
    end = _status_kb("VmRSS")
    by_state = engine.stats()["by_state"]
    engine.close(timeout=0.1)
    return {"start_kb": start, "end_kb": end, "peak_kb": _status_kb("VmHWM"),
            "rows": sum(by_state.values()), "retrying": by_state["retrying"]}


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), sys.argv[2])))
