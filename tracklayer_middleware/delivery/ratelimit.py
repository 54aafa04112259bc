"""``TokenBucket``: keep this process under X's rate limit before X has to say 429.

X counts conversions per account per 15-minute window. The bucket refills continuously at
``rate_per_15min / 900`` tokens per second up to ``capacity``; a batch takes one token per
conversion. A request larger than the capacity waits for a full bucket and then leaves it in
debt, so a batch is never split for the bucket and the long-run rate still holds.
(Several hosts share one budget through ``redis_ratelimit.RedisTokenBucket`` instead.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WINDOW_SECONDS = 15 * 60


class TokenBucket:
    """A thread-safe token bucket with an injectable monotonic ``clock``.

    ``burst`` (the capacity) defaults to one minute of allowance, so a full batch of 500 can
    go at once at the default rate (48,000 per 15 min gives 3,200) while a fresh process cannot
    spend the whole window in its first second. The bucket starts full.
    """

    def __init__(
        self,
        rate_per_15min: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_15min <= 0:
            raise ValueError("rate_per_15min must be greater than 0.")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1.")
        self.rate = rate_per_15min / WINDOW_SECONDS
        self.capacity = float(burst if burst is not None else max(1, int(rate_per_15min // 15)))
        self._clock = clock
        self._cond = threading.Condition()
        self._tokens = self.capacity
        self._stamp = clock()
        self._held_until = self._stamp

    @classmethod
    def per_15min(cls, rate: float) -> TokenBucket:
        """A bucket for X's 15-minute limit with the default burst."""
        return cls(rate)

    # ------------------------------------------------------------------ asking
    def time_until(self, tokens: int = 1) -> float:
        """Seconds until ``tokens`` could be taken (0.0: now)."""
        with self._cond:
            return self._wait_locked(tokens)

    def try_acquire(self, tokens: int = 1) -> bool:
        """Take ``tokens`` if available now; never blocks."""
        with self._cond:
            if self._wait_locked(tokens) > 0:
                return False
            self._tokens -= tokens
            return True

    def acquire(
        self,
        tokens: int = 1,
        timeout: float | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> bool:
        """Block until ``tokens`` are taken (True), or ``timeout`` passes / ``stop`` is set.

        Waiting is on a condition (woken by ``put_back``, ``wake`` and ``hold``) or, when
        ``stop`` is given, on that event — never a polling loop.
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            with self._cond:
                wait = self._wait_locked(tokens)
                if wait <= 0:
                    self._tokens -= tokens
                    return True
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return False
                    wait = min(wait, left)
                if stop is None:
                    self._cond.wait(wait)
                    continue
            if stop.wait(wait):
                return False

    # ------------------------------------------------------------------ changing
    def put_back(self, tokens: int) -> None:
        """Return tokens that were taken but not spent (a dry run, a refused batch)."""
        with self._cond:
            self._refill_locked()
            self._tokens = min(self.capacity, self._tokens + tokens)
            self._cond.notify_all()

    def hold(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` from now; a longer hold already set is kept."""
        with self._cond:
            self._held_until = max(self._held_until, self._clock() + seconds)
            self._cond.notify_all()

    def wake(self) -> None:
        """Make blocked ``acquire()`` calls look again (e.g. after a test moved the clock)."""
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ internals
    def _refill_locked(self) -> None:
        now = self._clock()
        if now > self._stamp:  # a clock that stands still or steps back mints nothing
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def _wait_locked(self, tokens: int) -> float:
        if tokens < 0:
            raise ValueError("tokens must not be negative.")
        self._refill_locked()
        held = max(0.0, self._held_until - self._stamp)
        # An oversized request needs a full bucket; then it leaves the bucket in debt.
        needed = min(float(tokens), self.capacity)
        short = max(0.0, needed - self._tokens)
        return max(held, short / self.rate)

    def __repr__(self) -> str:
        with self._cond:
            tokens = self._tokens
        return (
            f"TokenBucket(rate_per_15min={self.rate * WINDOW_SECONDS:g}, "
            f"capacity={self.capacity:g}, tokens={tokens:.1f})"
        )
