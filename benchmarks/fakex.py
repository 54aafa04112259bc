"""The fake X in its own process (so it never competes with the sender for the GIL).

``python -m benchmarks.fakex [--limit N --window SECONDS]`` prints its base URL, then obeys
one command per stdin line, answering one JSON line: ``stats``, ``delay SECONDS`` (0: at
once), ``wait N`` (until N conversions were accepted, at most 10 minutes), ``reset``,
``quit``. With ``--limit`` it also plays X's rate limit: at most N
conversions per fixed window (the first starts at the first request); a batch over the
budget gets 429 with ``Retry-After`` and ``x-rate-limit-reset``, and is counted.
With ``--no-validate`` it skips X's body validation (the fake's own cost: about 40 µs per
conversion, which caps a serial client near 9,000/s) and only counts, so a drain measures
the sender's ceiling rather than the fake's. ``FakeXProcess`` drives it from a benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tracklayer_middleware.testing import FakeXConversionsAPI
from tracklayer_middleware.testing.fake_x import _Answer, _Handler

from .apps import PIXEL_ID, X_TOKEN

REPO = Path(__file__).resolve().parent.parent


class RateLimitedFakeX(FakeXConversionsAPI):
    """The fake X plus X's per-account limit: ``limit`` conversions per ``window`` seconds."""

    def __init__(
        self, *, limit: int | None, window: float, validate: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.validate = validate
        self.accepted_count = 0
        self.limit = limit
        self.window = window
        self.rate_limited = 0
        self._limit_lock = threading.Condition()
        self._bench_window_start: float | None = None
        self._bench_used = 0

    def _process(self, handler: _Handler, match: Any, headers: Mapping[str, str],
                 body: bytes) -> _Answer:
        n = body.count(b'"conversion_id"')
        if self.limit is not None:
            refusal = self._spend(n)
            if refusal is not None:
                return refusal
        if self.validate:
            answer = super()._process(handler, match, headers, body)
        else:
            answer = _Answer(200, json.dumps(self._success(n)).encode())
        if answer.status == 200:
            with self._limit_lock:
                self.accepted_count += n
                self._limit_lock.notify_all()
        return answer

    def wait_accepted(self, n: int, timeout: float) -> bool:
        """Block until ``n`` conversions were accepted since the last reset."""
        with self._limit_lock:
            return self._limit_lock.wait_for(lambda: self.accepted_count >= n, timeout)

    def _spend(self, n: int) -> _Answer | None:
        assert self.limit is not None
        with self._limit_lock:
            now = time.monotonic()
            if self._bench_window_start is None or now - self._bench_window_start >= self.window:
                self._bench_window_start, self._bench_used = now, 0
            if self._bench_used + n <= self.limit:
                self._bench_used += n
                return None
            self.rate_limited += 1
            reset = self._bench_window_start + self.window
        wait = str(max(1, math.ceil(reset - now)))
        body = {"errors": [{"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded."}]}
        return _Answer(429, json.dumps(body).encode(), {
            "Retry-After": wait,
            "x-rate-limit-reset": str(int(time.time() + reset - now) + 1),
        })

    def reset(self) -> None:
        """Also forget the counts and start a fresh rate-limit window."""
        super().reset()
        with self._limit_lock:
            self.accepted_count = self.rate_limited = self._bench_used = 0
            self._bench_window_start = None

    def stats(self) -> dict[str, Any]:
        """Counts for the benchmark."""
        statuses: dict[str, int] = {}
        for request in self.requests:
            statuses[str(request.status)] = statuses.get(str(request.status), 0) + 1
        with self._limit_lock:
            accepted = self.accepted_count
        return {"accepted": accepted, "requests": len(self.requests),
                "statuses": statuses, "rate_limited": self.rate_limited}


def main() -> None:
    """Serve until ``quit`` or end of input."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--window", type=float, default=900.0)
    parser.add_argument("--no-validate", dest="validate", action="store_false")
    args = parser.parse_args()
    fake = RateLimitedFakeX(limit=args.limit, window=args.window, validate=args.validate,
                            pixel_ids=[PIXEL_ID], token=X_TOKEN)
    with fake:
        print(json.dumps({"base_url": fake.base_url}), flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "quit":
                break
            if command == "delay":
                fake.delay = float(arg) or None
            elif command == "wait":
                fake.wait_accepted(int(arg), timeout=600)
            elif command == "reset":
                fake.reset()
            print(json.dumps(fake.stats()), flush=True)


class FakeXProcess:
    """Start ``benchmarks.fakex`` in a child process and talk to it (a context manager)."""

    def __init__(
        self, *, limit: int | None = None, window: float = 900.0, validate: bool = True
    ) -> None:
        command = [sys.executable, "-m", "benchmarks.fakex", "--window", str(window)]
        if limit is not None:
            command += ["--limit", str(limit)]
        if not validate:
            command.append("--no-validate")
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1, cwd=REPO)
        assert self._proc.stdout is not None
        self.base_url: str = json.loads(self._proc.stdout.readline())["base_url"]

    def command(self, line: str) -> dict[str, Any]:
        """Send one command; its JSON answer."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._proc.stdout.readline())
        return answer

    def stats(self) -> dict[str, Any]:
        """Accepted conversions, requests, statuses, 429s."""
        return self.command("stats")

    def close(self) -> None:
        """Stop the child."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.write("quit\n")
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> FakeXProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    main()
