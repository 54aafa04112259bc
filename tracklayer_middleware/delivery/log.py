"""The delivery log: one entry per attempt, stored in the outbox and logged as one record.

Entries carry identifier *names* (``["twclid", "hashed_email"]``), never their values, and
never the token: a log line can be pasted into a ticket as it is.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

logger = logging.getLogger("tracklayer.delivery")

_LEVELS = {
    "sent": logging.INFO,
    "dry_run": logging.INFO,
    "skipped_consent": logging.INFO,
    "skipped_no_identifier": logging.WARNING,
    "retrying": logging.WARNING,
    "paused": logging.ERROR,
    "dead": logging.ERROR,
}


@dataclass(frozen=True)
class DeliveryLogEntry:
    """One attempt (or one decision without an HTTP call) for one conversion."""

    conversion_id: str
    event: str
    pixel_id: str
    attempt: int
    state: str
    started_at: float
    finished_at: float
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    debug_id: str | None = None
    identifiers: tuple[str, ...] = field(default=())
    latency_ms: float | None = None

    def describe(self) -> str:
        """A one-line human summary, as used in log messages and ``trace()``."""
        parts = [f"attempt {self.attempt}: {self.state}"]
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.error_code:
            parts.append(self.error_code)
        if self.error_message:
            parts.append(self.error_message)
        if self.debug_id:
            parts.append(f"debug_id={self.debug_id}")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.0f} ms")
        return ", ".join(parts)


def log_attempt(entry: DeliveryLogEntry) -> None:
    """Emit one structured record on ``tracklayer.delivery`` (fields in ``extra``)."""
    level = _LEVELS.get(entry.state, logging.INFO)
    if not logger.isEnabledFor(level):
        return
    extra = asdict(entry)
    extra["identifiers"] = list(entry.identifiers)
    # LogRecord reserves some attribute names; ours do not collide with them.
    logger.log(
        level,
        "conversion %s (%s, pixel %s) %s",
        entry.conversion_id, entry.event, entry.pixel_id, entry.describe(),
        extra=extra,
    )
