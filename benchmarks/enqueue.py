"""Outbox enqueue rate: finished requests handing their conversion to a SQLite file outbox.

Each ``handoff()`` is what the middleware does after a response: one committed transaction
(WAL, ``synchronous=NORMAL``) holding that request's conversion. Conversions are built
beforehand so only the enqueue is timed.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from . import apps
from .convert import purchase
from .harness import Result, Scale, Stats, Target

NAME = "enqueue"


def run(scale: Scale) -> list[Result]:
    """Conversions per second committed one request (one transaction) at a time."""
    from tracklayer_middleware.conversion import build_conversion

    n = scale.pick(smoke=20, quick=2_000, full=5_000)
    ids = itertools.count()
    rates = []
    with tempfile.TemporaryDirectory(prefix="tracklayer-bench-") as tmp:
        engine = apps.engine(outbox=f"sqlite:///{Path(tmp) / 'outbox.db'}")
        try:
            for _ in range(scale.reps):
                batch = [
                    build_conversion(engine.settings, "purchase", attribution=apps.TWCLID,
                                     **purchase(ids))
                    for _ in range(n)
                ]
                start = time.perf_counter()
                for conversion in batch:
                    engine.handoff([conversion])
                rates.append(n / (time.perf_counter() - start))
            rows = sum(sum(states.values()) for states in engine.outbox.counts().values())
        finally:
            engine.close(timeout=1)
    return [
        Result(
            name=NAME,
            figure="outbox enqueue rate, one process, SQLite file",
            stats=Stats.of(rates),
            unit="/s",
            target=Target(">=", 5_000),
            baseline="—",
            detail=f"one transaction per request's hand-off; {rows:,} rows committed",
        )
    ]
