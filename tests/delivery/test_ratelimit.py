"""TokenBucket with a hand-moved clock: no sleeps, no timing assertions."""

from __future__ import annotations

import threading

import pytest

from tracklayer_middleware.delivery.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.read_by_other_thread = threading.Event()  # an acquire() thread has looked at it

    def __call__(self) -> float:
        if threading.current_thread() is not threading.main_thread():
            self.read_by_other_thread.set()
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_default_burst_is_a_minute_and_fits_full_batches(clock):
    bucket = TokenBucket(48_000, clock=clock)
    assert bucket.capacity == 3200
    assert bucket.rate == pytest.approx(48_000 / 900)
    assert [bucket.try_acquire(500) for _ in range(7)] == [True] * 6 + [False]
    assert bucket.time_until(500) == pytest.approx(300 / (48_000 / 900))
    assert TokenBucket.per_15min(48_000).capacity == 3200


def test_refills_with_time_up_to_capacity(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)  # 1 token per second
    assert bucket.try_acquire(10)
    assert not bucket.try_acquire(1)
    clock.advance(3)
    assert bucket.time_until(3) == 0.0 and bucket.time_until(4) == pytest.approx(1.0)
    clock.advance(1000)
    assert bucket.try_acquire(10) and not bucket.try_acquire(1)


def test_oversized_request_waits_for_a_full_bucket_then_leaves_debt(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.try_acquire(5)
    assert bucket.time_until(50) == pytest.approx(5.0)  # needs a full bucket, not 50 tokens
    clock.advance(5)
    assert bucket.try_acquire(50)
    assert bucket.time_until(1) == pytest.approx(41.0)  # 40 in debt, then one more


def test_clock_stepping_back_mints_nothing(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.try_acquire(10)
    clock.advance(-100)
    clock.advance(100)
    assert not bucket.try_acquire(1)


def test_hold_blocks_grants_and_is_never_shortened(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    bucket.hold(30)
    bucket.hold(5)
    assert bucket.time_until(1) == pytest.approx(30.0)
    assert not bucket.try_acquire(1)
    clock.advance(30)
    assert bucket.try_acquire(1)


def test_put_back_returns_tokens_up_to_capacity(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.try_acquire(8)
    bucket.put_back(3)
    assert bucket.try_acquire(5) and not bucket.try_acquire(1)
    bucket.put_back(100)
    assert bucket.try_acquire(10) and not bucket.try_acquire(1)


def run_acquire(bucket: TokenBucket, *args, **kwargs):
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(bucket.acquire(*args, **kwargs)))
    thread.start()
    return thread, outcome


def test_acquire_blocks_until_the_clock_brings_tokens(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.acquire(10)
    thread, outcome = run_acquire(bucket, 5)
    assert clock.read_by_other_thread.wait(10)
    clock.advance(5)
    bucket.wake()
    thread.join(timeout=10)
    assert outcome == [True]
    assert not bucket.try_acquire(1)


def test_acquire_is_woken_by_put_back(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.acquire(10)
    thread, outcome = run_acquire(bucket, 4)
    bucket.put_back(4)
    thread.join(timeout=10)
    assert outcome == [True]


def test_acquire_times_out_on_the_bucket_clock(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.acquire(10)
    assert bucket.acquire(1, timeout=0) is False
    thread, outcome = run_acquire(bucket, 10, timeout=5)
    assert clock.read_by_other_thread.wait(10)  # the deadline is taken before time moves
    clock.advance(6)  # past the deadline, yet 4 tokens short
    bucket.wake()
    thread.join(timeout=10)
    assert outcome == [False]


def test_acquire_gives_up_when_stop_is_set(clock):
    bucket = TokenBucket(900, burst=10, clock=clock)
    assert bucket.acquire(10)
    stop = threading.Event()
    thread, outcome = run_acquire(bucket, 10, stop=stop)
    stop.set()
    thread.join(timeout=10)
    assert outcome == [False]


def test_concurrent_takers_never_overdraw(clock):
    bucket = TokenBucket(900, burst=100, clock=clock)
    granted: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            ok = bucket.try_acquire(1)
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 100


def test_bad_arguments():
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(100, burst=0)
    with pytest.raises(ValueError):
        TokenBucket(100).try_acquire(-1)
    assert "capacity=6" in repr(TokenBucket(100))
