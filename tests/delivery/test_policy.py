"""The retry policy, rule by rule: pure functions, a fixed clock and a seeded random."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracklayer_middleware.delivery.client import SendResult, XError
from tracklayer_middleware.delivery.policy import (
    DEFAULT_RATE_LIMIT_PAUSE,
    backoff_delay,
    decide,
    probe_delay,
    rate_limit_pause,
    slowdown_from_headers,
)
from tracklayer_middleware.settings import TrackLayerSettings

NOW = datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc)
SETTINGS = TrackLayerSettings(pixel_id="o1a2b", secret_key="k" * 32)


def run(result: SendResult, **kwargs):
    args = {
        "attempts": 1,
        "first_attempt_at": NOW,
        "now": NOW,
        "settings": SETTINGS,
        "rng": random.Random(7),
    }
    args.update(kwargs)
    return decide(result, **args)


def test_ok_is_sent():
    decision = run(SendResult("ok", 200, accepted=3, debug_id="dbg1"))
    assert decision.action == "sent" and decision.consume_attempt
    assert "dbg1" in decision.reason and decision.error_code is None


@pytest.mark.parametrize("kind", ["server_error", "timeout", "connection", "ambiguous"])
def test_transient_failures_retry_with_backoff(kind):
    decision = run(SendResult(kind, 503 if kind == "server_error" else None), attempts=3)
    assert decision.action == "retry" and decision.consume_attempt
    assert decision.cause == kind
    assert NOW <= decision.next_attempt_at <= NOW + timedelta(seconds=4)  # base 1 * 2**2
    assert decision.error_code == kind.upper()
    assert "same conversion_id" in decision.reason


def test_retry_keeps_x_error_code():
    result = SendResult("server_error", 503, errors=(XError("SERVICE_UNAVAILABLE", "busy"),))
    assert run(result).error_code == "SERVICE_UNAVAILABLE"


def test_dead_needs_both_attempts_and_age():
    failure = SendResult("server_error", 500)
    old = NOW - timedelta(hours=73)
    young = NOW - timedelta(hours=71)
    assert run(failure, attempts=12, first_attempt_at=old).action == "dead"
    assert run(failure, attempts=11, first_attempt_at=old).action == "retry"
    assert run(failure, attempts=500, first_attempt_at=young).action == "retry"
    assert run(failure, attempts=500, first_attempt_at=None).action == "retry"
    dead = run(failure, attempts=12, first_attempt_at=old)
    assert "12 attempts" in dead.reason and dead.error_code == "SERVER_ERROR"


def test_dead_rule_follows_settings():
    settings = SETTINGS.replace(max_attempts=2, dead_after_hours=1)
    old = NOW - timedelta(hours=2)
    decision = run(SendResult("timeout"), attempts=2, first_attempt_at=old, settings=settings)
    assert decision.action == "dead"


def test_429_pauses_the_pixel_without_using_an_attempt():
    result = SendResult("rate_limited", 429, retry_after=30.0)
    decision = run(result, attempts=12, first_attempt_at=NOW - timedelta(days=10))
    assert decision.action == "pause" and not decision.consume_attempt
    assert decision.pause_seconds == 30.0
    assert decision.next_attempt_at == NOW + timedelta(seconds=30)
    assert decision.error_code == "RATE_LIMITED" and decision.cause == "rate_limited"


@pytest.mark.parametrize(
    ("retry_after", "reset_in", "expected"),
    [
        (30.0, None, 30.0),
        (None, 90.0, 90.0),
        (30.0, 90.0, 90.0),  # the later of the two
        (120.0, 5.0, 120.0),
        (0.0, None, 1.0),  # clamped up
        (None, -50.0, 1.0),  # reset already past
        (3600.0, None, 300.0),  # clamped down
        (None, None, DEFAULT_RATE_LIMIT_PAUSE),
    ],
)
def test_rate_limit_pause(retry_after, reset_in, expected):
    reset = None if reset_in is None else NOW.timestamp() + reset_in
    result = SendResult("rate_limited", 429, retry_after=retry_after, rate_limit_reset=reset)
    assert rate_limit_pause(result, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kind", "status", "code", "advice"),
    [
        ("auth", 401, "AUTH_FAILED", "rotate the token and verify the advertiser context"),
        (
            "forbidden",
            403,
            "TAG_ACCESS_DENIED",
            "tag access denied: token, advertiser account and pixel_id are not in the same "
            "permitted context — check ownership instead of retrying",
        ),
        ("not_found", 404, "NOT_FOUND", "pixel or event not found"),
    ],
)
def test_auth_problems_pause_with_the_guides_fix(kind, status, code, advice):
    decision = run(SendResult(kind, status), attempts=12, first_attempt_at=NOW - timedelta(days=9))
    assert decision.action == "pause" and not decision.consume_attempt
    assert decision.error_code == code
    assert advice in decision.reason
    assert "conversions kept" in decision.reason
    assert decision.pause_seconds == probe_delay(0)


def test_auth_pause_uses_x_code_and_probe_backoff():
    result = SendResult("auth", 401, errors=(XError("UNAUTHORIZED_ACCESS", "nope"),))
    decision = run(result, probes=3)
    assert decision.error_code == "UNAUTHORIZED_ACCESS"
    assert decision.pause_seconds == probe_delay(3)


def test_missing_token_pause_explains_the_env_var():
    result = SendResult("auth", detail="the X token is missing: X_ADS_BEARER_TOKEN is unset")
    decision = run(result)
    assert decision.action == "pause" and "X_ADS_BEARER_TOKEN" in decision.reason
    assert decision.error_message == result.detail


def test_probe_delay_grows_to_a_cap():
    delays = [probe_delay(n) for n in range(10)]
    assert delays[:4] == [60.0, 120.0, 240.0, 480.0]
    assert delays == sorted(delays) and max(delays) == 900.0
    assert probe_delay(10_000) == 900.0


def test_400_on_a_batch_bisects():
    result = SendResult("invalid", 400, errors=(XError("INVALID_PARAMETER", "bad", "value"),))
    decision = run(result, batch_size=8)
    assert decision.action == "bisect" and not decision.consume_attempt
    assert decision.next_attempt_at == NOW


def test_400_on_one_conversion_is_dead_with_x_error():
    error = XError("INVALID_PARAMETER", "price_currency must be ISO-4217", "price_currency")
    decision = run(SendResult("invalid", 400, errors=(error,)), batch_size=1)
    assert decision.action == "dead"
    assert (decision.error_code, decision.error_message, decision.error_parameter) == (
        "INVALID_PARAMETER",
        "price_currency must be ISO-4217",
        "price_currency",
    )
    assert "retry-dead" in decision.reason


def test_400_without_x_error_still_has_a_code():
    assert run(SendResult("invalid", 413)).error_code == "HTTP_413"


@given(
    attempts=st.integers(min_value=-5, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=100),
    cap=st.floats(min_value=0.001, max_value=10_000),
    seed=st.integers(),
)
def test_backoff_stays_within_full_jitter_bounds(attempts, base, cap, seed):
    delay = backoff_delay(attempts, base=base, cap=cap, rng=random.Random(seed))
    ceiling = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 62))
    assert 0.0 <= delay <= ceiling


def test_backoff_is_jittered_over_the_whole_window():
    rng = random.Random(1)
    delays = [backoff_delay(5, base=1.0, cap=300.0, rng=rng) for _ in range(2000)]
    assert max(delays) <= 16.0
    assert min(delays) < 1.0 and max(delays) > 15.0  # full jitter, not equal jitter


@given(
    remaining=st.one_of(st.none(), st.integers(min_value=-1, max_value=100_000)),
    reset_in=st.one_of(st.none(), st.floats(min_value=-1000, max_value=10_000)),
)
def test_slowdown_is_bounded(remaining, reset_in):
    reset = None if reset_in is None else NOW.timestamp() + reset_in
    wait = slowdown_from_headers(remaining, reset, NOW)
    assert 0.0 <= wait <= 300.0
    if remaining is None or reset_in is None or reset_in <= 0:
        assert wait == 0.0


def test_slowdown_spreads_the_budget_before_a_429():
    reset = NOW.timestamp() + 100
    assert slowdown_from_headers(1000, reset, NOW) == pytest.approx(0.1)
    assert slowdown_from_headers(10, reset, NOW) == pytest.approx(10.0)
    assert slowdown_from_headers(0, reset, NOW) == pytest.approx(100.0)
