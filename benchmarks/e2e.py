"""End to end on loopback: uvicorn (Starlette) and gunicorn with 4 workers (Flask), bare vs
behind TrackLayer, under the same bounded load (a fixed number of keep-alive connections
for a fixed time: ``wrk`` when installed, else a multi-process Python load generator).

Two more servers per kind bound what the figure can show: the *floor* (the do-nothing
middleware of ``floors``), what any after-response middleware costs behind a real server,
and *A/A*, a second bare server: identical processes differ by a few % on a shared machine
(memory layout, which core they land on), and this row shows by how much in this run. All
servers of a kind run at once; load runs alternate between them so all see the same machine.
Requests are ordinary page views (browser headers and cookies, no ``twclid``).
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import apps
from .harness import Result, Scale, Stats, Target, interleaved, paired_ratio
from .servers import Server

NAME_UVICORN = "e2e_uvicorn"
NAME_GUNICORN = "e2e_gunicorn"
CONNECTIONS = 16


def run(scale: Scale) -> list[Result]:
    """Throughput ratios tracked / bare for uvicorn and gunicorn."""
    # Short runs, many rounds: the machine's slow drifts (other tenants) then hit both sides
    # of a round alike, and the median of 15 paired ratios is steadier than of 7 long ones.
    duration = scale.pick(smoke=1.0, quick=1.0, full=2.0)
    rounds = scale.pick(smoke=scale.reps, quick=scale.reps, full=15)
    results = []
    with tempfile.TemporaryDirectory(prefix="tracklayer-bench-") as tmp:
        base = {"X_ADS_BEARER_TOKEN": apps.X_TOKEN}
        for name, kind, workers, label in (
            (NAME_UVICORN, "uvicorn", 1, "uvicorn, 1 process, Starlette"),
            (NAME_GUNICORN, "gunicorn", 4, "gunicorn, 4 workers, Flask"),
        ):
            outbox = {"TRACKLAYER_BENCH_OUTBOX": f"sqlite:///{Path(tmp) / f'{kind}.db'}"}
            with contextlib.ExitStack() as stack:
                servers = {
                    wrap: stack.enter_context(
                        Server(kind, {**base, **outbox, "TRACKLAYER_BENCH_WRAP": wrap},
                               workers=workers)
                    )
                    for wrap in ("bare", "bare_again", "floor", "tracklayer")
                }
                if scale.mode == "full":  # warm them all
                    for server in servers.values():
                        load(server.url, 1.0)
                cpu: dict[str, list[float]] = {wrap: [] for wrap in servers}
                samples = interleaved(
                    {wrap: lambda s=server, c=cpu[wrap]: _measure(s, duration, c)  # type: ignore[misc]
                     for wrap, server in servers.items()},
                    rounds,
                )
            results += _rows(name, label, samples, cpu, duration)
    return results


def _measure(server: Server, duration: float, cpu_per_request: list[float]) -> float:
    """Requests per second under ``load``; appends the server's CPU µs per request."""
    before = server.cpu_seconds()
    rate = load(server.url, duration)
    cpu_per_request.append((server.cpu_seconds() - before) / (rate * duration) * 1e6)
    return rate


def _rows(
    name: str,
    label: str,
    samples: dict[str, list[float]],
    cpu: dict[str, list[float]],
    duration: float,
) -> list[Result]:
    def row(wrap: str, suffix: str, figure: str, target: Target | None) -> Result:
        return Result(
            name=name + suffix,
            figure=figure,
            stats=paired_ratio(samples[wrap], samples["bare"]),
            unit="x",
            target=target,
            baseline="bare app, same server and load",
            detail=(
                f"{Stats.of(samples[wrap]).median:,.0f} vs "
                f"{Stats.of(samples['bare']).median:,.0f} req/s; {generator()}, "
                f"{CONNECTIONS} connections, {duration:g} s per run"
            ),
        )

    extra = Stats.of([t - b for t, b in zip(cpu["tracklayer"], cpu["bare"], strict=True)])
    return [
        row("tracklayer", "", f"end-to-end throughput, {label}", Target(">=", 0.95)),
        row("floor", "_floor", f"floor: a do-nothing middleware, {label}", None),
        row("bare_again", "_aa", f"A/A: a second bare server, {label}", None),
        Result(
            name=name + "_cpu",
            figure=f"server CPU per request, {label}",
            stats=paired_ratio(cpu["tracklayer"], cpu["bare"]),
            unit="x",
            target=None,
            baseline="bare app, same runs",
            detail=(
                f"{Stats.of(cpu['tracklayer']).median:.0f} vs {Stats.of(cpu['bare']).median:.0f}"
                f" µs (+{extra.median:.1f} µs; floor {Stats.of(cpu['floor']).median:.0f} µs,"
                f" second bare {Stats.of(cpu['bare_again']).median:.0f} µs):"
                " CPU the server processes used / requests served, steadier than req/s"
            ),
        ),
    ]


def generator() -> str:
    """Which load generator runs."""
    return "wrk" if shutil.which("wrk") else "python load generator"


def load(url: str, duration: float) -> float:
    """Requests per second served to ``CONNECTIONS`` keep-alive connections for ``duration``."""
    if shutil.which("wrk"):
        return _wrk(url, duration)
    return _python_load(url, duration)


def _wrk(url: str, duration: float) -> float:
    headers = [f"{k}: {v}" for k, v in apps.HEADERS if k != "host"]
    headers.append(f"cookie: {apps.OTHER_COOKIES}")
    argv = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run([*argv, url + "/"], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"errors under load:\n{out}")
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(match.group(1))


def _python_load(url: str, duration: float) -> float:
    parts = urlsplit(url)
    jobs = [(parts.hostname or "127.0.0.1", parts.port or 80, duration)] * CONNECTIONS
    with multiprocessing.get_context("spawn").Pool(min(CONNECTIONS, 4)) as pool:
        counts = pool.map(_client_loop, _grouped(jobs, 4))
    return sum(counts) / duration


def _grouped(jobs: list[tuple[str, int, float]], groups: int) -> list[list[tuple[str, int, float]]]:
    return [jobs[i::groups] for i in range(groups)]


def _client_loop(connections: list[tuple[str, int, float]]) -> int:
    """One process driving several keep-alive connections round-robin; requests done."""
    headers = dict(apps.HEADERS) | {"cookie": apps.OTHER_COOKIES}
    conns = [http.client.HTTPConnection(host, port) for host, port, _ in connections]
    deadline = time.monotonic() + connections[0][2]
    done = 0
    while time.monotonic() < deadline:
        for conn in conns:
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET / answered {response.status}")
            done += 1
    for conn in conns:
        conn.close()
    return done
