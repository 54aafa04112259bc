"""A token bucket shared by every worker on every host, kept in one Redis hash.

X limits conversions per account, not per process: N Celery workers each running their own
in-memory bucket would together send N times too fast. Here the bucket's state (tokens left,
last refill) lives in Redis and is updated by one Lua script, so the check-and-take is atomic
across workers, and time comes from the Redis server's clock, so skewed worker clocks cannot
mint tokens. It has the ``acquire(tokens, stop=)`` of ``ratelimit.TokenBucket``, so the
standard sender uses it unchanged. (A 429 is not the bucket's business: the sender pauses the
pixel in the shared store.)

Needs the ``redis`` package (extra ``[celery]``); it is imported only by ``from_url()``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis

WINDOW_SECONDS = 15 * 60

# KEYS[1] = bucket hash; ARGV = rate (tokens/s), capacity, tokens wanted.
# Returns "0" when granted (tokens taken), else the seconds to wait before asking again.
_ACQUIRE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= wanted then
  tokens = tokens - wanted
else
  wait = (wanted - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""


class RedisTokenBucket:
    """``rate_per_15min`` tokens per 15 minutes, up to ``capacity`` at once, shared via Redis.

    One token is one conversion (X counts events, not requests). ``key`` names the bucket:
    use one per X account/pixel, e.g. ``tracklayer:ratelimit:<pixel_id>``.
    """

    def __init__(
        self,
        client: Redis,
        key: str,
        *,
        rate_per_15min: int,
        capacity: int | None = None,
    ) -> None:
        if rate_per_15min < 1:
            raise ValueError("rate_per_15min must be at least 1")
        self.key = key
        self.rate_per_15min = rate_per_15min
        self.rate = rate_per_15min / WINDOW_SECONDS
        # Default burst: one minute of allowance, so a full batch can go at once yet a fleet
        # of fresh workers cannot spend the whole 15-minute budget in its first second.
        self.capacity = capacity if capacity is not None else max(1, rate_per_15min // 15)
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._acquire = client.register_script(_ACQUIRE)

    @classmethod
    def from_url(cls, url: str, key: str, **kwargs: Any) -> RedisTokenBucket:
        """A bucket on a new client for ``url`` (``redis://host:port/db``)."""
        import redis

        return cls(redis.Redis.from_url(url), key, **kwargs)

    def try_acquire(self, tokens: int = 1) -> float:
        """Take ``tokens`` now if the bucket has them: 0.0; else the seconds to wait.

        A request larger than ``capacity`` asks for ``capacity`` tokens: it could never be
        granted otherwise, and a batch is never split just for the bucket.
        """
        wanted = max(1, min(tokens, self.capacity))
        return float(self._acquire(keys=[self.key], args=[self.rate, self.capacity, wanted]))

    def acquire(
        self, tokens: int = 1, *, stop: threading.Event | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Block until ``tokens`` are taken (True), or ``stop`` is set / ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stop = stop or threading.Event()
        while True:
            wait = self.try_acquire(tokens)
            if wait <= 0:
                return True
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            if stop.wait(wait):
                return False

    def __repr__(self) -> str:
        return (
            f"RedisTokenBucket(key={self.key!r}, rate_per_15min={self.rate_per_15min}, "
            f"capacity={self.capacity})"
        )
