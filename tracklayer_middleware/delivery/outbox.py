"""The outbox: where a conversion waits, durably, until X has it.

One row per (pixel_id, event_id, conversion_id); enqueueing the same action again is a
no-op, so a retried webhook never counts twice. Senders *claim* due rows under a lease: a
sender that dies mid-send simply lets the lease run out and the rows come back.

This module holds the shapes every backend shares (``State``, ``OutboxRow``, ``RowUpdate``,
``PixelPause``), the ``Outbox`` protocol, and ``open_outbox(settings)``, which picks a
backend from the ``outbox`` setting. Frameworks plug in more backends with
``register_outbox(scheme, factory)`` (``tracklayer_django`` registers ``"django"``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigurationError
from ..settings import TrackLayerSettings
from .log import DeliveryLogEntry

if TYPE_CHECKING:
    from ..conversion import Conversion


class State:
    """The states of an outbox row (plain strings: they are stored and shown as they are)."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    RETRYING = "retrying"
    DEAD = "dead"
    PAUSED = "paused"
    DRY_RUN = "dry_run"
    SKIPPED_CONSENT = "skipped_consent"
    SKIPPED_NO_IDENTIFIER = "skipped_no_identifier"

    ALL: tuple[str, ...] = (
        PENDING, IN_FLIGHT, SENT, RETRYING, DEAD, PAUSED, DRY_RUN,
        SKIPPED_CONSENT, SKIPPED_NO_IDENTIFIER,
    )
    #: Rows ``flush()`` waits for.
    UNFINISHED: tuple[str, ...] = (PENDING, IN_FLIGHT, RETRYING)
    #: Rows that will never change again on their own (retention may prune the good ones).
    DONE: tuple[str, ...] = (SENT, DRY_RUN, SKIPPED_CONSENT, SKIPPED_NO_IDENTIFIER)


#: Pause kinds: ``auth`` (401/403/404: rows parked as ``paused``, probed with backoff) and
#: ``rate_limit`` (429: rows stay ``retrying`` and the pixel is simply not claimed until then).
PAUSE_AUTH = "auth"
PAUSE_RATE_LIMIT = "rate_limit"


@dataclass(frozen=True)
class OutboxRow:
    """One conversion in the outbox, as a sender or ``trace()`` sees it."""

    id: int
    pixel_id: str
    event: str
    event_id: str
    conversion_id: str
    record: dict[str, Any]  # Conversion.to_record(): JSON-safe, hashes only
    state: str
    attempts: int
    created_at: float
    updated_at: float
    first_attempt_at: float | None
    next_attempt_at: float
    lease_owner: str | None = None
    last_status: int | None = None
    last_code: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class RowUpdate:
    """The outcome of one attempt for one claimed row (applied only while its lease holds)."""

    row_id: int
    lease_owner: str
    state: str
    attempts: int
    first_attempt_at: float | None = None
    next_attempt_at: float | None = None
    status: int | None = None
    code: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class PixelPause:
    """Why a pixel's delivery is on hold, and until when (epoch seconds)."""

    pixel_id: str
    kind: str  # PAUSE_AUTH | PAUSE_RATE_LIMIT
    reason: str
    until: float
    since: float
    probes: int = 0
    status: int | None = None
    code: str | None = None

    def active(self, now: float) -> bool:
        """True while this pause holds rows back (auth pauses hold until a probe succeeds)."""
        return self.kind == PAUSE_AUTH or self.until > now


class Outbox(Protocol):
    """What the engine and the sender need from a durable store.

    Times are epoch seconds passed in by the caller, so backends stay clock-free and tests
    can step time. Every method may raise ``OutboxError`` when the store is unusable.
    """

    def enqueue(self, conversions: Sequence[Conversion], *, now: float) -> list[bool]:
        """Insert rows; one flag per conversion, False where the row already existed."""

    def claim(
        self, limit: int, *, lease_seconds: float, now: float,
        pixel_ids: Collection[str] | None = None,
    ) -> tuple[str, list[OutboxRow]]:
        """Lease up to ``limit`` due rows; returns the lease owner token and the rows."""

    def renew(self, lease_owner: str, row_ids: Sequence[int], *, until: float) -> None:
        """Extend a lease while its rows are still being worked on."""

    def finish(
        self, updates: Sequence[RowUpdate], entries: Sequence[DeliveryLogEntry], *, now: float
    ) -> int:
        """Record attempt outcomes and their log rows in one transaction; rows applied."""

    def pause(self, pause: PixelPause, *, now: float) -> None:
        """Put a pixel on hold (auth pauses also park its waiting rows as ``paused``)."""

    def resume(self, pixel_id: str, *, now: float) -> int:
        """Lift a pixel's pause; its ``paused`` rows become ``pending``. Returns how many."""

    def pauses(self) -> dict[str, PixelPause]:
        """Every recorded pause, by pixel id (check ``PixelPause.active`` for relevance)."""

    def unfinished(self, now: float) -> tuple[int, float | None]:
        """Count of rows ``flush()`` waits for, and when the earliest of them is due."""

    def next_due(self, now: float, pixel_ids: Collection[str] | None = None) -> float | None:
        """When a sender next has something to claim (None: nothing scheduled)."""

    def counts(self) -> dict[str, dict[str, int]]:
        """``{event: {state: n}}``."""

    def oldest_unfinished(self) -> float | None:
        """``created_at`` of the oldest row still waiting to be delivered."""

    def last_errors(self) -> dict[str, DeliveryLogEntry]:
        """The most recent failed attempt per pixel."""

    def rows(self, conversion_id: str) -> list[OutboxRow]:
        """Every row with this conversion id (one per pixel/event that used it)."""

    def find(
        self, *, states: Collection[str] | None = None, event: str | None = None,
        created_since: float | None = None, updated_since: float | None = None,
        updated_before: float | None = None,
    ) -> list[OutboxRow]:
        """Rows matching every given filter, oldest first (``tracklayer report``/``retry-dead``)."""

    def attempts(self, conversion_id: str) -> list[DeliveryLogEntry]:
        """The delivery log of a conversion id, oldest first."""

    def retry_dead(
        self, *, now: float, conversion_ids: Collection[str] | None = None,
        event: str | None = None,
    ) -> int:
        """Give dead rows (optionally filtered) a fresh start as ``pending``."""

    def purge(self, *, done_before: float) -> int:
        """Delete finished rows (and their log) last updated before ``done_before``."""

    def close(self) -> None:
        """Release connections held by this process."""


OutboxFactory = Callable[[TrackLayerSettings], Outbox]
_factories: dict[str, OutboxFactory] = {}
_factories_lock = threading.Lock()


def register_outbox(scheme: str, factory: OutboxFactory) -> None:
    """Let an integration provide the backend for ``outbox=scheme`` (e.g. ``"django"``)."""
    with _factories_lock:
        _factories[scheme] = factory


def open_outbox(settings: TrackLayerSettings) -> Outbox:
    """The outbox named by ``settings.outbox``: ``memory``, ``sqlite:///path`` or registered;
    ``delivery="celery"`` (or ``outbox="celery"``) always gets the ``CeleryOutbox``.

    A relative sqlite path is relative to the current directory; its parent directory is
    created. Opening does no I/O for SQLite: a bad file is reported on first use.
    """
    spec = settings.outbox
    scheme = spec.split(":", 1)[0]
    if spec == "celery" or settings.delivery == "celery":
        # Celery mode: rows live in the broker's Redis and workers send (extra [celery]).
        from .celery_backend import CeleryOutbox

        return CeleryOutbox(settings)
    with _factories_lock:
        factory = _factories.get(scheme)
    if factory is not None:
        return factory(settings)
    if spec == "memory":
        from .memory_outbox import MemoryOutbox

        return MemoryOutbox()
    if spec.startswith("sqlite:///"):
        from .sqlite_outbox import SQLiteOutbox

        return SQLiteOutbox(spec[len("sqlite:///"):])
    if scheme == "django":
        raise ConfigurationError(
            "outbox='django' needs tracklayer_django: add 'tracklayer_django' to "
            "INSTALLED_APPS (it registers the backend), or use 'sqlite:///path'."
        )
    raise ConfigurationError(
        f"outbox {spec!r} has no backend: use 'memory', 'sqlite:///path/to/file', or "
        "register one with tracklayer_middleware.delivery.outbox.register_outbox()."
    )
