"""What to do after a send: the retry policy as pure functions (no I/O, no clock reads).

``decide()`` turns one ``SendResult`` into a ``Decision``:

- ``ok`` → ``sent``.
- ``server_error`` / ``timeout`` / ``connection`` / ``ambiguous`` → ``retry`` after an
  exponential backoff with full jitter (same ``conversion_id`` every time); ``dead`` only once
  BOTH ``attempts >= max_attempts`` and more than ``dead_after_hours`` passed since the first
  attempt.
- ``rate_limited`` (429) → ``pause`` the whole pixel until the later of ``Retry-After`` and the
  rate-limit reset, clamped to 1-300 s; no attempt is consumed.
- ``auth`` / ``forbidden`` / ``not_found`` (401/403/404) → ``pause`` the pixel and probe again
  after ``probe_delay(probes)``; the conversions are kept, no attempt is consumed.
- ``invalid`` (400) → ``bisect`` a batch of more than one; a single conversion goes ``dead``
  with X's error code, message and parameter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from ..settings import TrackLayerSettings
from .client import SendKind, SendResult

Action = Literal["sent", "retry", "dead", "pause", "bisect"]

MIN_RATE_LIMIT_PAUSE = 1.0
MAX_RATE_LIMIT_PAUSE = 300.0
# A 429 without Retry-After or reset headers: wait a minute, a fair slice of X's 15-min window.
DEFAULT_RATE_LIMIT_PAUSE = 60.0
PROBE_BASE_SECONDS = 60.0
PROBE_MAX_SECONDS = 900.0
_MAX_EXPONENT = 62  # 2**62 already dwarfs any cap; keeps the float math finite

_RETRYABLE: frozenset[SendKind] = frozenset({"server_error", "timeout", "connection", "ambiguous"})
_PAUSING: frozenset[SendKind] = frozenset({"auth", "forbidden", "not_found"})

_FIXES: dict[str, tuple[str, str]] = {
    # kind: (default error code, what the operator should do) — the guide's troubleshooting.
    "auth": (
        "AUTH_FAILED",
        "the token is invalid, expired, or its developer app lacks Ads API access: rotate the "
        "token and verify the advertiser context",
    ),
    "forbidden": (
        "TAG_ACCESS_DENIED",
        "tag access denied: token, advertiser account and pixel_id are not in the same "
        "permitted context — check ownership instead of retrying",
    ),
    "not_found": (
        "NOT_FOUND",
        "pixel or event not found for this account: check pixel_id and the event ids "
        "against X Events Manager",
    ),
}

_default_rng = random.Random()


@dataclass(frozen=True)
class Decision:
    """What the sender does with the conversions of one send.

    ``action``: ``sent``, ``retry`` (at ``next_attempt_at``), ``dead``, ``pause`` (the whole
    pixel waits ``pause_seconds``, until ``next_attempt_at``) or ``bisect`` (split the batch
    and send the halves now). ``consume_attempt`` says whether this send counts toward
    ``max_attempts``. ``cause`` is the ``SendResult.kind`` it came from: a ``pause`` caused by
    ``rate_limited`` is a short wait, the others need an operator. ``error_*`` carry X's
    error (or a local code) for the delivery log.
    """

    action: Action
    reason: str
    cause: SendKind
    next_attempt_at: datetime | None = None
    consume_attempt: bool = True
    pause_seconds: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_parameter: str | None = None

    def with_error(self, result: SendResult, default_code: str) -> Decision:
        """This decision carrying X's first error, or ``default_code`` and the local detail."""
        error = result.first_error
        if error is None:
            return replace(self, error_code=default_code, error_message=result.detail)
        return replace(
            self,
            error_code=error.code,
            error_message=error.message,
            error_parameter=error.parameter,
        )


def backoff_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Full-jitter backoff: uniform(0, min(cap, base * 2**(attempts - 1))) seconds.

    ``attempts`` counts the attempts made so far (1 after the first failure).
    """
    exponent = min(max(attempts - 1, 0), _MAX_EXPONENT)
    return (rng or _default_rng).uniform(0.0, min(cap, base * 2.0**exponent))


def probe_delay(
    probes: int, *, base: float = PROBE_BASE_SECONDS, cap: float = PROBE_MAX_SECONDS
) -> float:
    """Seconds a pixel paused by 401/403/404 waits before the next probe.

    ``probes`` counts the probes that already failed (0 for the first pause): 60 s, 120 s,
    240 s, ... up to 15 minutes, so a fixed token is noticed soon and a broken one is not
    hammered.
    """
    return min(cap, base * 2.0 ** min(max(probes, 0), _MAX_EXPONENT))


def rate_limit_pause(result: SendResult, now: datetime) -> float:
    """Seconds to pause a pixel after a 429: the later of Retry-After and the reset, 1-300 s."""
    waits = []
    if result.retry_after is not None:
        waits.append(result.retry_after)
    if result.rate_limit_reset is not None:
        waits.append(result.rate_limit_reset - now.timestamp())
    wait = max(waits) if waits else DEFAULT_RATE_LIMIT_PAUSE
    return min(MAX_RATE_LIMIT_PAUSE, max(MIN_RATE_LIMIT_PAUSE, wait))


def slowdown_from_headers(remaining: int | None, reset: float | None, now: datetime) -> float:
    """Seconds to wait before the next request so the budget lasts until the reset.

    ``remaining``/``reset`` come from X's ``x-rate-limit-*`` headers (``SendResult``). The
    budget left is spread evenly over the time left in the window: with plenty left this is
    a few milliseconds, with none left it is the wait until the reset (at most 300 s). 0 when
    the headers are missing or the window is over.
    """
    if remaining is None or reset is None:
        return 0.0
    left = reset - now.timestamp()
    if left <= 0:
        return 0.0
    wait = left if remaining <= 0 else left / remaining
    return min(MAX_RATE_LIMIT_PAUSE, wait)


def decide(
    result: SendResult,
    *,
    attempts: int,
    first_attempt_at: datetime | None,
    now: datetime,
    settings: TrackLayerSettings,
    rng: random.Random | None = None,
    batch_size: int = 1,
    probes: int = 0,
) -> Decision:
    """The ``Decision`` for ``result``, the outcome of sending ``batch_size`` conversions.

    ``attempts`` counts the attempts of these conversions so far, this one included;
    ``first_attempt_at`` is when the first one was made (None: this is it). ``probes``
    counts earlier failed probes of a pixel paused by 401/403/404.
    """
    if result.kind == "ok":
        debug = f" (debug_id {result.debug_id})" if result.debug_id else ""
        return Decision("sent", f"X processed {result.accepted} conversion(s){debug}", result.kind)
    if result.kind == "rate_limited":
        pause = rate_limit_pause(result, now)
        return Decision(
            "pause",
            f"rate limited by X (429): pixel paused {pause:.0f} s; no attempt used",
            result.kind,
            next_attempt_at=now + timedelta(seconds=pause),
            consume_attempt=False,
            pause_seconds=pause,
        ).with_error(result, "RATE_LIMITED")
    if result.kind in _PAUSING:
        default_code, fix = _FIXES[result.kind]
        pause = probe_delay(probes)
        return Decision(
            "pause",
            f"{result.describe()}: {fix}. Delivery to this pixel is paused (conversions kept); "
            f"next probe in {pause:.0f} s",
            result.kind,
            next_attempt_at=now + timedelta(seconds=pause),
            consume_attempt=False,
            pause_seconds=pause,
        ).with_error(result, default_code)
    if result.kind == "invalid":
        if batch_size > 1:
            return Decision(
                "bisect",
                f"X refused the batch of {batch_size} ({result.describe()}): splitting it to "
                "find the invalid conversion",
                result.kind,
                next_attempt_at=now,
                consume_attempt=False,
            ).with_error(result, f"HTTP_{result.status_code}")
        return Decision(
            "dead",
            f"X refused the conversion: {result.describe()}. It is not retried: fix the data "
            "that produced it, then `tracklayer retry-dead`",
            result.kind,
        ).with_error(result, f"HTTP_{result.status_code}")
    return _retry_or_dead(result, attempts, first_attempt_at, now, settings, rng)


def _retry_or_dead(
    result: SendResult,
    attempts: int,
    first_attempt_at: datetime | None,
    now: datetime,
    settings: TrackLayerSettings,
    rng: random.Random | None,
) -> Decision:
    assert result.kind in _RETRYABLE, result.kind
    age = now - (first_attempt_at or now)
    if attempts >= settings.max_attempts and age > timedelta(hours=settings.dead_after_hours):
        return Decision(
            "dead",
            f"gave up after {attempts} attempts over {age.total_seconds() / 3600:.1f} h; "
            f"last: {result.describe()}",
            result.kind,
        ).with_error(result, result.kind.upper())
    delay = backoff_delay(
        attempts, base=settings.retry_base_seconds, cap=settings.retry_max_seconds, rng=rng
    )
    return Decision(
        "retry",
        f"{result.describe()}: retry #{attempts + 1} in {delay:.1f} s (same conversion_id)",
        result.kind,
        next_attempt_at=now + timedelta(seconds=delay),
    ).with_error(result, result.kind.upper())
