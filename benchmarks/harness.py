"""Measuring on a noisy machine: interleaved repetitions, medians with spread, paired ratios.

Absolute times on a shared 2-core box swing by tens of percent from one minute to the next;
ratios of two cases measured side by side do not. So every comparison here runs its cases
interleaved (A, B, B, A, A, B, ...: the order flips each round so a slow drift hits both),
takes the ratio *within* each round, and reports the median of those paired ratios with
their min and max.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["smoke", "quick", "full"]


@dataclass(frozen=True)
class Scale:
    """How big a run is: ``smoke`` (tests: tiny, seconds), ``quick`` (< 1 min), ``full``
    (the figures of record: every case repeated at least 5 times)."""

    mode: Mode

    def pick(self, *, smoke: Any, quick: Any, full: Any) -> Any:
        """The value for this mode."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.mode]

    @property
    def reps(self) -> int:
        """Repetitions of each case (a full run: at least 5)."""
        return int(self.pick(smoke=2, quick=3, full=7))


@dataclass(frozen=True)
class Stats:
    """Median of repeated measurements with their min and max."""

    median: float
    low: float
    high: float
    samples: tuple[float, ...] = field(repr=False)

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Stats of ``samples`` (at least one)."""
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), tuple(samples))

    def scaled(self, factor: float) -> Stats:
        """The same stats in another unit (e.g. seconds -> microseconds)."""
        return Stats.of([s * factor for s in self.samples])


def interleaved(cases: Mapping[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run each case ``reps`` times, interleaved, flipping the order every round.

    Each callable performs one repetition and returns its measurement. Garbage collection is
    forced between rounds so one case does not pay for another's garbage.
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(reps):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            samples[name].append(cases[name]())
    return samples


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Stats:
    """Stats of the per-round ratios ``numerator[i] / denominator[i]``."""
    return Stats.of([a / b for a, b in zip(numerator, denominator, strict=True)])


def per_op(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Target:
    """A bound the figure must meet: ``<=`` or ``>=`` ``bound`` (in the result's unit)."""

    op: Literal["<=", ">="]
    bound: float

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the bound."""
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {_number(self.bound)}"


@dataclass(frozen=True)
class Result:
    """One row of the table: the figure's headline value against its target."""

    name: str
    figure: str
    stats: Stats
    unit: str
    target: Target | None
    baseline: str = ""
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether the median meets the target (None when there is no target)."""
        return None if self.target is None else self.target.met(self.stats.median)

    def cells(self) -> list[str]:
        """The table cells of this row."""
        s = self.stats
        verdict = {True: "PASS", False: "MISS", None: "info"}[self.passed]
        target = f"{self.target} {self.unit}".strip() if self.target else "—"
        return [
            self.figure,
            f"{_number(s.median)} {self.unit}".strip(),
            f"{_number(s.low)} - {_number(s.high)}",
            target,
            verdict,
            self.baseline,
            self.detail,
        ]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict of the row."""
        return {
            "name": self.name,
            "figure": self.figure,
            "median": self.stats.median,
            "min": self.stats.low,
            "max": self.stats.high,
            "samples": list(self.stats.samples),
            "unit": self.unit,
            "target": asdict(self.target) if self.target else None,
            "passed": self.passed,
            "baseline": self.baseline,
            "detail": self.detail,
        }


HEADERS = ["figure", "median", "spread (min - max)", "target", "", "baseline", "detail"]


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table."""
    rows = [HEADERS, *(r.cells() for r in results)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in HEADERS) + "|")
    return "\n".join(lines)


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
