"""The Redis token bucket is one bucket for every worker: atomic, server-clocked, holdable."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tracklayer_middleware.delivery.redis_ratelimit import RedisTokenBucket

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]


@pytest.fixture
def key(redis_client: Any) -> Any:
    name = f"tracklayer-test:bucket:{uuid.uuid4().hex}"
    yield name
    redis_client.delete(name)


def test_grants_the_burst_then_says_how_long_to_wait(redis_client: Any, key: str) -> None:
    # 900 per 15 min = 1 token/s, so the wait for the next token is at most 1 s.
    bucket = RedisTokenBucket(redis_client, key, rate_per_15min=900, capacity=10)
    assert [bucket.try_acquire(5), bucket.try_acquire(5)] == [0.0, 0.0]
    wait = bucket.try_acquire(1)
    assert 0 < wait <= 1.0
    assert bucket.acquire(1, timeout=0) is False


def test_a_request_larger_than_the_bucket_is_not_starved(redis_client: Any, key: str) -> None:
    bucket = RedisTokenBucket(redis_client, key, rate_per_15min=900, capacity=10)
    assert bucket.try_acquire(500) == 0.0
    assert bucket.try_acquire(1) > 0


def test_concurrent_workers_never_take_more_than_the_bucket_holds(
    redis_url: str, key: str
) -> None:
    # The slowest possible refill (1 token per 15 min) makes the count exact: 30 tokens, 8
    # workers on their own connections racing for 20 each -> exactly 30 grants in total.
    granted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        bucket = RedisTokenBucket.from_url(redis_url, key, rate_per_15min=1, capacity=30)
        start.wait(timeout=10)
        mine = sum(1 for _ in range(20) if bucket.try_acquire(1) == 0.0)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(granted) == 8
    assert sum(granted) == 30


def test_acquire_gives_up_when_stopped_or_out_of_time(redis_client: Any, key: str) -> None:
    bucket = RedisTokenBucket(redis_client, key, rate_per_15min=1, capacity=1)
    assert bucket.acquire(1) is True
    stop = threading.Event()
    stop.set()
    assert bucket.acquire(1, stop=stop) is False
    assert bucket.acquire(1, timeout=0.01) is False


def test_repr_names_the_bucket_not_the_connection(redis_client: Any, key: str) -> None:
    bucket = RedisTokenBucket(redis_client, key, rate_per_15min=48_000)
    assert repr(bucket) == (
        f"RedisTokenBucket(key={key!r}, rate_per_15min=48000, capacity=3200)"
    )
