"""What ``TrackLayer.stats()`` and ``TrackLayer.trace()`` return, built from the outbox.

``stats()`` is a plain dict (JSON-ready, for dashboards and ``tracklayer status``);
``trace()`` is a ``Trace`` whose ``str()`` tells one conversion's whole life in words, ending
with what to do about it (the product guide's troubleshooting advice where it applies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .log import DeliveryLogEntry
from .outbox import Outbox, OutboxRow, State

#: The guide's troubleshooting advice, keyed by X error code, HTTP status or final state.
HINTS: dict[str, str] = {
    "401": (
        "401 or AUTH_FAILED: the token is invalid, expired, or tied to a developer app "
        "without the right Ads API access. Rotate the token and verify the advertiser "
        "context first; delivery resumes on its own once a probe succeeds."
    ),
    "403": (
        "Tag access denied: the token, advertiser account, and pixel_id do not belong to "
        "the same permitted context. Check ownership instead of retrying the same payload; "
        "delivery resumes on its own once a probe succeeds."
    ),
    "404": (
        "Pixel or event not found for this account: check pixel_id and the event ids in "
        "X Events Manager; delivery resumes on its own once a probe succeeds."
    ),
    "429": "Rate limited by X: delivery waits for X's reset and continues; nothing is lost.",
    State.DEAD: (
        "X rejected this conversion (see the error and parameter above). Fix the data at "
        "its source, then run `tracklayer retry-dead` to send it again with the same "
        "conversion_id."
    ),
    State.SENT: (
        "Accepted by X. Events accepted but missing in reporting: look in Events Manager "
        "before campaign reports; matching, attribution windows and processing time delay "
        "visible reporting."
    ),
    State.SKIPPED_CONSENT: (
        "Not sent: the visitor denied ad user data consent (adUserData). This is correct."
    ),
    State.SKIPPED_NO_IDENTIFIER: (
        "Not sent: no twclid, email or phone. Weak match quality: twclid is missing or "
        "first-party identifiers were not captured; audit capture at landing."
    ),
    State.DRY_RUN: (
        "Not sent (dry run): this process's environment is not in allowed_environments."
    ),
    State.RETRYING: "X or the network failed; TrackLayer retries with the same conversion_id.",
    State.PENDING: "Waiting for the sender (is it running? `tracklayer status`).",
    State.IN_FLIGHT: "Being sent right now (or its sender died; the lease will expire).",
    State.PAUSED: "Delivery to this pixel is paused; see the error above.",
}

_HASHED = ("twclid", "hashed_email", "hashed_phone")


def hint_for(state: str, status: int | None = None, code: str | None = None) -> str:
    """The advice for a conversion in ``state`` whose last answer was ``status``/``code``."""
    if state in (State.PAUSED, State.RETRYING) and status is not None:
        if code == "AUTH_FAILED" or status == 401:
            return HINTS["401"]
        if str(status) in HINTS:
            return HINTS[str(status)]
    return HINTS.get(state, "")


def build_stats(
    outbox: Outbox, *, now: float, buffered: int = 0, dry_run: bool = False
) -> dict[str, Any]:
    """The ``stats()`` dict: counts by state and by event, age of the oldest waiting row,
    active pauses, the last failure per pixel, and conversions buffered in memory."""
    by_event = outbox.counts()
    by_state: dict[str, int] = dict.fromkeys(State.ALL, 0)
    for states in by_event.values():
        for state, n in states.items():
            by_state[state] = by_state.get(state, 0) + n
    oldest = outbox.oldest_unfinished()
    return {
        "by_state": by_state,
        "by_event": by_event,
        "oldest_pending_age_seconds": None if oldest is None else max(0.0, now - oldest),
        "paused": {
            pixel: pause.reason for pixel, pause in outbox.pauses().items() if pause.active(now)
        },
        "last_error": {
            pixel: {
                "at": _iso(entry.finished_at),
                "conversion_id": entry.conversion_id,
                "state": entry.state,
                "http_status": entry.http_status,
                "error_code": entry.error_code,
                "error_message": entry.error_message,
                "debug_id": entry.debug_id,
            }
            for pixel, entry in outbox.last_errors().items()
        },
        "buffered_in_memory": buffered,
        "dry_run": dry_run,
    }


@dataclass(frozen=True)
class Trace:
    """One conversion's whole life: what was queued, every attempt, and where it stands."""

    conversion_id: str
    event: str
    event_id: str
    pixel_id: str
    state: str
    conversion: dict[str, Any]  # the queued fields, identifier values shortened
    attribution_note: str
    identifiers: tuple[str, ...]
    created_at: float
    attempts: tuple[DeliveryLogEntry, ...] = field(default=())
    next_attempt_at: float | None = None
    last_status: int | None = None
    last_code: str | None = None
    last_error: str | None = None
    hint: str = ""

    @classmethod
    def from_outbox(cls, row: OutboxRow, attempts: list[DeliveryLogEntry]) -> Trace:
        """Build the trace of one outbox row and its delivery log."""
        record = dict(row.record)
        for name in _HASHED:
            if record.get(name):
                record[name] = _short(str(record[name]))
        record.pop("v", None)
        waiting = row.state in (State.PENDING, State.RETRYING, State.PAUSED)
        return cls(
            conversion_id=row.conversion_id,
            event=row.event,
            event_id=row.event_id,
            pixel_id=row.pixel_id,
            state=row.state,
            conversion=record,
            attribution_note=str(record.get("attribution_note", "")),
            identifiers=tuple(record.get("identifiers", ())),
            created_at=row.created_at,
            attempts=tuple(attempts),
            next_attempt_at=row.next_attempt_at if waiting else None,
            last_status=row.last_status,
            last_code=row.last_code,
            last_error=row.last_error,
            hint=hint_for(row.state, row.last_status, row.last_code),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``tracklayer trace --json``)."""
        data = asdict(self)
        data["attempts"] = [asdict(a) for a in self.attempts]
        return data

    def __str__(self) -> str:
        c = self.conversion
        lines = [
            f"conversion {self.conversion_id}: {self.state}",
            f"  event       {self.event} (X event {self.event_id}, pixel {self.pixel_id})",
            f"  time        {c.get('conversion_time')}",
        ]
        if c.get("value") is not None:
            lines.append(f"  value       {c.get('value')} {c.get('currency') or ''}".rstrip())
        shown = [
            f"{name} {c[name]}" if c.get(name) else name for name in self.identifiers
        ]
        lines.append(f"  identifiers {', '.join(shown) or 'none'}")
        lines.append(f"  attribution {self.attribution_note}")
        lines.append(f"  queued      {_iso(self.created_at)}")
        for entry in self.attempts:
            lines.append(f"  {_iso(entry.finished_at)}  {entry.describe()}")
        if self.next_attempt_at is not None and self.state == State.RETRYING:
            lines.append(f"  next try    {_iso(self.next_attempt_at)}")
        if self.last_error and self.state != State.SENT:
            lines.append(f"  last error  {self.last_error}")
        if self.hint:
            lines.append(f"  what to do  {self.hint}")
        return "\n".join(lines)


def _short(value: str) -> str:
    return value if len(value) <= 12 else f"{value[:8]}…{value[-4:]}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
