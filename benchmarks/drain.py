"""Draining a backlog to the fake X: our ceiling, and our pace at X's real limit.

The backlog (100,000 purchases in a SQLite file outbox) is built once and copied for every
run. A run starts an engine over the copy (its sender starts on its own: the outbox is not
empty) and ends when ``flush()`` says nothing is left; the fake X runs in its own process.

- Ceiling: the token bucket is set so high it never waits.
- At the limit: the real settings (``rate_limit_per_15min`` = 48,000, burst one minute) with
  time running ``speedup`` times fast (the bucket refills that much faster), against a fake
  X enforcing X's real 60,000 conversions per 15 minutes on the same sped-up clock (window
  900 / speedup s). The figure is delivered / allowed, where allowed = burst + rate x
  elapsed is the most the bucket could have let through; 429s are counted by the fake.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from . import apps
from .convert import purchase
from .fakex import FakeXProcess
from .harness import Result, Scale, Stats, Target, interleaved

NAME_CEILING = "drain_ceiling"
NAME_LIMIT = "drain_limit"
X_LIMIT_PER_15MIN = 60_000
WINDOW_SECONDS = 900.0


def build_backlog(path: Path, n: int) -> None:
    """A SQLite outbox at ``path`` holding ``n`` pending purchases."""
    from tracklayer_middleware.conversion import build_conversion

    ids = itertools.count()
    engine = apps.engine(outbox=f"sqlite:///{path}")
    try:
        for start in range(0, n, 5_000):
            batch = [
                build_conversion(engine.settings, "purchase", attribution=apps.TWCLID,
                                 **purchase(ids))
                for _ in range(min(5_000, n - start))
            ]
            engine.outbox.enqueue(batch, now=time.time())
    finally:
        engine.close(timeout=1)


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file (WAL content included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def drain(backlog: Path, work: Path, fake: FakeXProcess, bucket: object, n: int) -> float:
    """Seconds until X accepted all ``n`` rows of a copy of ``backlog``.

    Completion is read from the fake X, not from ``flush()``: flush polls the outbox every
    50 ms, and at a 100,000 backlog each poll is a ~40 ms scan that would compete with the
    sender for the CPU (see docs/benchmarks.md).
    """
    from tracklayer_middleware.engine import TrackLayer

    target = work / f"drain-{time.monotonic_ns()}.db"
    copy_db(backlog, target)
    fake.command("reset")
    os.environ["X_ADS_BEARER_TOKEN"] = apps.X_TOKEN
    start = time.perf_counter()
    engine = TrackLayer(
        apps.settings(outbox=f"sqlite:///{target}", delivery="background",
                      environment="production", api_base_url=fake.base_url),
        bucket=bucket,  # type: ignore[arg-type]
    )
    try:
        accepted = int(fake.command(f"wait {n}")["accepted"])
        elapsed = time.perf_counter() - start
        drained = engine.flush(timeout=60)
    finally:
        engine.close(timeout=5)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    if not drained or accepted < n:
        raise RuntimeError(f"drain incomplete: flushed={drained}, accepted {accepted} of {n}")
    return elapsed


def run(scale: Scale) -> list[Result]:
    """Both drains, interleaved run by run."""
    from tracklayer_middleware.delivery.ratelimit import TokenBucket
    from tracklayer_middleware.settings import TrackLayerSettings

    n: int = scale.pick(smoke=600, quick=10_000, full=100_000)
    reps: int = scale.pick(smoke=1, quick=2, full=5)
    speedup: float = scale.pick(smoke=2_000.0, quick=60.0, full=100.0)
    per_15min = TrackLayerSettings.from_mapping(apps.settings()).rate_limit_per_15min
    window = WINDOW_SECONDS / speedup
    rate = per_15min / WINDOW_SECONDS * speedup  # conversions/s the bucket allows here
    burst = per_15min // 15
    with tempfile.TemporaryDirectory(prefix="tracklayer-bench-") as tmp:
        work = Path(tmp)
        backlog = work / "backlog.db"
        build_backlog(backlog, n)
        shares: list[float] = []
        limited_429: list[int] = []
        with FakeXProcess(validate=False) as open_x, FakeXProcess(
            limit=X_LIMIT_PER_15MIN, window=window
        ) as strict_x:

            def ceiling() -> float:
                return n / drain(backlog, work, open_x, TokenBucket(1e15, burst=10**9), n)

            def at_limit() -> float:
                # The real limit, its 15 minutes squeezed into 900 / speedup seconds.
                bucket = TokenBucket(per_15min * speedup, burst=burst)
                elapsed = drain(backlog, work, strict_x, bucket, n)
                shares.append(n / (burst + rate * elapsed))
                limited_429.append(strict_x.stats()["rate_limited"])
                return n / elapsed

            samples = interleaved({"ceiling": ceiling, "limit": at_limit}, reps)
    ceiling_stats = Stats.of(samples["ceiling"])
    return [
        Result(
            name=NAME_CEILING,
            figure=f"drain of a {n:,} backlog to the fake X, bucket wide open (ceiling)",
            stats=ceiling_stats,
            unit="/s",
            target=Target(">=", 20_000),
            baseline="—",
            detail=(
                "SQLite claim, POST batches of 500, record each row; the receiver (own "
                "process) counts without validating, so only our side is measured"
            ),
        ),
        Result(
            name=NAME_LIMIT,
            figure=f"drain of a {n:,} backlog at X's limit (time x{speedup:g})",
            stats=Stats.of([share * 100 for share in shares]),
            unit="% of allowed",
            target=Target(">=", 95),
            baseline=f"bucket allowance ({per_15min:,}/15 min + burst {burst:,})",
            detail=(
                f"{Stats.of(samples['limit']).median:,.0f}/s delivered vs {rate:,.0f}/s allowed; "
                f"429s from the fake X (60,000/15 min): {sum(limited_429)}"
            ),
        ),
    ]
