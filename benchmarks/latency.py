"""A checkout request that converts, through uvicorn on 127.0.0.1, while X is slow.

One uvicorn server runs the Starlette app behind ``TrackLayerMiddleware`` (SQLite outbox,
background sender, the fake X in its own process). Cases, interleaved round by round:

- ``slow``: ``GET /buy`` (``tracker.convert`` with email+phone) while the fake X answers
  after 500 ms;
- ``fast``: the same while the fake X answers at once (the baseline);
- ``inline``: ``GET /buy-inline``, a view doing ``httpx.post`` to the slow fake X itself.

The response must not wait for X: slow/fast p50 and p99 stay ≈ 1; inline pays the 500 ms.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from . import apps
from .fakex import FakeXProcess
from .harness import Result, Scale, Stats, Target, interleaved, paired_ratio, percentile
from .servers import Server

NAME_P50 = "latency_p50"
NAME_P99 = "latency_p99"
NAME_INLINE = "latency_inline"
X_DELAY = 0.5


def run(scale: Scale) -> list[Result]:
    """p50/p99 of converting requests with X slow vs fast, and of an inline POST."""
    n = scale.pick(smoke=5, quick=100, full=400)
    n_inline = scale.pick(smoke=1, quick=1, full=5)
    rounds: dict[str, list[list[float]]] = {"slow": [], "fast": [], "inline": []}
    with tempfile.TemporaryDirectory(prefix="tracklayer-bench-") as tmp, FakeXProcess() as x:
        env = {
            "TRACKLAYER_BENCH_OUTBOX": f"sqlite:///{Path(tmp) / 'outbox.db'}",
            "TRACKLAYER_BENCH_X": x.base_url,
            "X_ADS_BEARER_TOKEN": apps.X_TOKEN,
        }
        with Server("uvicorn", env) as server, httpx.Client(base_url=server.url) as client:
            _timed(client, "/buy", max(1, n // 10))  # warm: sender thread, connections

            def case(name: str, path: str, delay: float, count: int) -> float:
                x.command(f"delay {delay}")
                times = _timed(client, path, count)
                rounds[name].append(times)
                return percentile(times, 50)

            p50 = interleaved(
                {
                    "slow": lambda: case("slow", "/buy", X_DELAY, n),
                    "fast": lambda: case("fast", "/buy", 0, n),
                    "inline": lambda: case("inline", "/buy-inline", X_DELAY, n_inline),
                },
                scale.reps,
            )
            accepted = x.stats()["accepted"]
    p99 = {name: [percentile(times, 99) for times in runs] for name, runs in rounds.items()}
    slow_ms = Stats.of(p50["slow"]).scaled(1e3).median
    fast_ms = Stats.of(p50["fast"]).scaled(1e3).median
    added = Stats.of([(a - b) * 1e3 for a, b in zip(p50["inline"], p50["slow"], strict=True)])
    return [
        Result(
            name=NAME_P50,
            figure="conversion request p50, X answering after 500 ms",
            stats=paired_ratio(p50["slow"], p50["fast"]),
            unit="x",
            target=Target("<=", 1.05),
            baseline="same, X answering at once",
            detail=f"{slow_ms:.2f} ms vs {fast_ms:.2f} ms; uvicorn, {n} requests per round",
        ),
        Result(
            name=NAME_P99,
            figure="conversion request p99, X answering after 500 ms",
            stats=paired_ratio(p99["slow"], p99["fast"]),
            unit="x",
            target=Target("<=", 1.05),
            baseline="same, X answering at once",
            detail=(
                f"{Stats.of(p99['slow']).median * 1e3:.2f} ms vs "
                f"{Stats.of(p99['fast']).median * 1e3:.2f} ms; {accepted:,} conversions reached X"
            ),
        ),
        Result(
            name=NAME_INLINE,
            figure="a view doing an inline `httpx.post`, X after 500 ms: added p50",
            stats=added,
            unit="ms",
            target=Target(">=", X_DELAY * 1e3 * 0.9),
            baseline="TrackLayer's p50, same slow X",
            detail=(
                f"inline p50 {Stats.of(p50['inline']).median * 1e3:.0f} ms: the visitor waits "
                "for X (target: ≈ +500 ms)"
            ),
        ),
    ]


def _timed(client: httpx.Client, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}")
    return times
