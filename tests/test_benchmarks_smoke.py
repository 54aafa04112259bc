"""Every benchmark runs end to end at tiny sizes and yields well-formed rows.

No timing is asserted here (numbers on a shared machine are noise at these sizes); what is
checked is that each benchmark still drives the product the way it claims to, so
``make bench`` does not break silently when the product changes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.harness import Result, Scale, Stats, interleaved, paired_ratio, percentile

SMOKE = Scale("smoke")
SLOW = {"latency", "drain", "e2e", "rss"}  # start servers or child processes


def check_rows(results: list[Result]) -> None:
    assert results
    for result in results:
        stats = result.stats
        assert math.isfinite(stats.median) and stats.low <= stats.median <= stats.high
        assert result.figure and result.unit
        json.dumps(result.to_json())


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BENCHMARKS],
)
def test_benchmark_runs(name: str) -> None:
    check_rows(BENCHMARKS[name](SMOKE))


def test_main_writes_one_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "results.json"
    assert main(["--quick", "--only", "convert", "--only", "enqueue", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert table.count("| figure |") == 1
    saved = json.loads(output.read_text())
    assert {r["name"] for r in saved["results"]} >= {"convert", "enqueue"}
    assert saved["machine"]["nproc"]


def test_interleaving_alternates_and_pairs_ratios() -> None:
    calls: list[str] = []
    samples = interleaved(
        {"a": lambda: calls.append("a") or 2.0, "b": lambda: calls.append("b") or 1.0}, 4
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert paired_ratio(samples["a"], samples["b"]) == Stats.of([2.0] * 4)
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0


@pytest.mark.slow
def test_python_load_generator_serves_requests_without_wrk() -> None:
    from benchmarks.e2e import _python_load
    from benchmarks.servers import Server

    with Server("uvicorn", {"TRACKLAYER_BENCH_WRAP": "bare"}) as server:
        assert _python_load(server.url, 1.0) > 0
