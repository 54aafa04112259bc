"""``DjangoOutbox``: the outbox in the app's own database (``TRACKLAYER = {"OUTBOX": "django"}``).

Rows are written through the ORM on the connection of the calling thread, so a ``convert()``
made inside ``transaction.atomic()`` commits or rolls back with the order it belongs to: an
order never commits without its conversion, nor a conversion without its order. The sender
is woken by ``transaction.on_commit``, never before the row is visible.

It keeps the SQLite outbox's semantics (``tracklayer_middleware.delivery.sqlite_outbox``)
statement for statement, so the standard sender drives it. Claims by many workers:

* on databases with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL 8, Oracle) each
  claimer locks the due rows it reads and skips rows another claimer holds, so concurrent
  workers take disjoint batches without waiting on each other;
* elsewhere (SQLite) one conditional ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) AND
  <still due>`` takes the rows: the database runs writers one at a time and the condition is
  evaluated by the writer, so two claimers can never both take a row.

Importing this module registers the backend (``tracklayer_django``'s AppConfig does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import (
    Case,
    Count,
    F,
    FloatField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest

from tracklayer_middleware.delivery.log import DeliveryLogEntry
from tracklayer_middleware.delivery.outbox import (
    PAUSE_AUTH,
    OutboxRow,
    PixelPause,
    RowUpdate,
    State,
    register_outbox,
)
from tracklayer_middleware.errors import OutboxError

from .models import DeliveryAttempt, OutboxEntry, PixelHold

if TYPE_CHECKING:
    from tracklayer_middleware.conversion import Conversion
    from tracklayer_middleware.settings import TrackLayerSettings

#: How often a SQLite claim retries when another writer holds the database lock.
SQLITE_LOCK_RETRIES = 5

_WAITING = (State.PENDING, State.RETRYING)
_NOT_DELIVERED = (State.PENDING, State.IN_FLIGHT, State.RETRYING, State.PAUSED)
_FAILED = (State.RETRYING, State.DEAD, State.PAUSED)


class DjangoOutbox:
    """The ``Outbox`` protocol on Django models (see the module docstring)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DjangoOutbox(using={self._db()!r})"

    # ------------------------------------------------------------------ plumbing
    def _db(self) -> str:
        return router.db_for_write(OutboxEntry) or "default"

    def _rows(self) -> QuerySet[OutboxEntry]:
        return OutboxEntry.objects.using(self._db())

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (e.g. the sender's wake) once new rows are committed."""
        with self._listeners_lock:
            if callback not in self._listeners:
                self._listeners.append(callback)

    def _committed(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()

    def close(self) -> None:
        """Close this thread's connection to the outbox database (Django reopens on use)."""
        connections[self._db()].close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn database failures into ``OutboxError`` carrying the database's own message."""
        try:
            yield
        except OutboxError:
            raise
        except DatabaseError as exc:
            connection = connections[self._db()]
            if not connection.in_atomic_block:
                # Django drops broken connections between requests; a sender thread has no
                # requests, so drop it here and let the next call reconnect.
                connection.close_if_unusable_or_obsolete()
            hint = ""
            if "no such table" in str(exc).lower() or "does not exist" in str(exc).lower():
                hint = " Run `python manage.py migrate tracklayer_django`."
            raise OutboxError(f"the Django outbox database failed: {exc}.{hint}") from exc

    # ------------------------------------------------------------------ writing
    def enqueue(self, conversions: Sequence[Conversion], *, now: float) -> list[bool]:
        """Insert rows in the caller's transaction; False where the row already existed."""
        db = self._db()
        inserted: list[bool] = []
        with self._errors(), transaction.atomic(using=db):
            held = set(
                PixelHold.objects.using(db).filter(kind=PAUSE_AUTH).values_list(
                    "pixel_id", flat=True
                )
            )
            for conversion in conversions:
                state = conversion.initial_state
                if state == State.PENDING and conversion.pixel_id in held:
                    state = State.PAUSED
                _, created = self._rows().get_or_create(
                    pixel_id=conversion.pixel_id,
                    event_id=conversion.event_id,
                    conversion_id=conversion.conversion_id,
                    defaults={
                        "event": conversion.event,
                        "record": conversion.to_record(),
                        "state": state,
                        "created_at": now,
                        "updated_at": now,
                        "next_attempt_at": now,
                    },
                )
                inserted.append(created)
            if any(inserted):
                transaction.on_commit(self._committed, using=db)
        return inserted

    def claim(
        self, limit: int, *, lease_seconds: float, now: float,
        pixel_ids: Collection[str] | None = None,
    ) -> tuple[str, list[OutboxRow]]:
        """Lease up to ``limit`` due rows (oldest due first) to a new owner token.

        Due rows are those of ``SQLiteOutbox.claim``: waiting rows whose time has come,
        in-flight rows whose lease ran out, and an auth-paused pixel's rows once its probe
        time has come (claiming them pushes the probe time out by the lease).
        """
        db = self._db()
        owner = uuid.uuid4().hex
        until = now + lease_seconds
        probing = PixelHold.objects.using(db).filter(kind=PAUSE_AUTH, until__lte=now)
        held = PixelHold.objects.using(db).filter(until__gt=now)
        due = (
            Q(state__in=_WAITING, next_attempt_at__lte=now)
            | Q(state=State.IN_FLIGHT, lease_until__lte=now)
            | Q(state=State.PAUSED, pixel_id__in=probing.values("pixel_id"))
        )
        candidates = self._rows().filter(due).exclude(pixel_id__in=held.values("pixel_id"))
        if pixel_ids is not None:
            candidates = candidates.filter(pixel_id__in=list(pixel_ids))
        candidates = candidates.order_by("next_attempt_at", "id")
        take = {"state": State.IN_FLIGHT, "lease_owner": owner, "lease_until": until,
                "updated_at": now}
        skip_locked = connections[db].features.has_select_for_update_skip_locked
        for attempt in range(SQLITE_LOCK_RETRIES):
            try:
                with self._errors(), transaction.atomic(using=db):
                    if skip_locked:
                        ids = list(
                            candidates.select_for_update(skip_locked=True)
                            .values_list("id", flat=True)[:limit]
                        )
                        self._rows().filter(id__in=ids).update(**take)
                    else:
                        # One statement, a write first: the database serialises it.
                        self._rows().filter(
                            due, id__in=Subquery(candidates.values("id")[:limit])
                        ).update(**take)
                    rows = list(self._rows().filter(lease_owner=owner).order_by(
                        "next_attempt_at", "id"))
                    probed = {r.pixel_id for r in rows} & set(
                        probing.values_list("pixel_id", flat=True))
                    PixelHold.objects.using(db).filter(pixel_id__in=probed).update(until=until)
                break
            except OutboxError as exc:
                if skip_locked or "locked" not in str(exc) or attempt == SQLITE_LOCK_RETRIES - 1:
                    raise
        return owner, [_row(r) for r in rows]

    def renew(self, lease_owner: str, row_ids: Sequence[int], *, until: float) -> None:
        """Extend the lease of rows still held by ``lease_owner``."""
        with self._errors():
            self._rows().filter(
                id__in=list(row_ids), lease_owner=lease_owner, state=State.IN_FLIGHT
            ).update(lease_until=until)

    def finish(
        self, updates: Sequence[RowUpdate], entries: Sequence[DeliveryLogEntry], *, now: float
    ) -> int:
        """Apply outcomes (only where the lease is still the updater's) and append the log."""
        db = self._db()
        applied = 0
        with self._errors(), transaction.atomic(using=db):
            for u in updates:
                changes: dict[str, Any] = {
                    "state": u.state, "attempts": u.attempts,
                    "first_attempt_at": Coalesce(
                        F("first_attempt_at"), Value(u.first_attempt_at, FloatField())),
                    "lease_owner": None, "lease_until": None, "last_status": u.status,
                    "last_code": u.code, "last_error": u.error, "updated_at": now,
                }
                if u.next_attempt_at is not None:
                    changes["next_attempt_at"] = u.next_attempt_at
                applied += self._rows().filter(
                    id=u.row_id, lease_owner=u.lease_owner, state=State.IN_FLIGHT
                ).update(**changes)
            DeliveryAttempt.objects.using(db).bulk_create(_attempt(e) for e in entries)
        return applied

    def pause(self, pause: PixelPause, *, now: float) -> None:
        """Record a pixel pause; an auth pause parks the pixel's waiting rows as ``paused``."""
        db = self._db()
        with self._errors(), transaction.atomic(using=db):
            PixelHold.objects.using(db).update_or_create(
                pixel_id=pause.pixel_id,
                defaults={
                    "kind": pause.kind, "reason": pause.reason, "until": pause.until,
                    "since": pause.since, "probes": pause.probes, "status": pause.status,
                    "code": pause.code,
                },
            )
            if pause.kind == PAUSE_AUTH:
                self._rows().filter(pixel_id=pause.pixel_id, state__in=_WAITING).update(
                    state=State.PAUSED, updated_at=now
                )

    def resume(self, pixel_id: str, *, now: float) -> int:
        """Lift the pixel's pause and make its ``paused`` rows due now."""
        db = self._db()
        with self._errors(), transaction.atomic(using=db):
            PixelHold.objects.using(db).filter(pixel_id=pixel_id).delete()
            return self._rows().filter(pixel_id=pixel_id, state=State.PAUSED).update(
                state=State.PENDING, next_attempt_at=now, updated_at=now
            )

    def retry_dead(
        self, *, now: float, conversion_ids: Collection[str] | None = None,
        event: str | None = None,
    ) -> int:
        """Dead rows (filtered by ids and/or event) become ``pending`` with a fresh budget."""
        rows = self._rows().filter(state=State.DEAD)
        if conversion_ids is not None:
            rows = rows.filter(conversion_id__in=list(conversion_ids))
        if event is not None:
            rows = rows.filter(event=event)
        with self._errors():
            return rows.update(
                state=State.PENDING, attempts=0, first_attempt_at=None,
                next_attempt_at=now, updated_at=now,
            )

    def purge(self, *, done_before: float) -> int:
        """Delete finished rows (sent, dry-run, skipped) and their log older than the cut."""
        db = self._db()
        done = self._rows().filter(state__in=State.DONE, updated_at__lt=done_before)
        with self._errors(), transaction.atomic(using=db):
            DeliveryAttempt.objects.using(db).filter(
                conversion_id__in=done.values("conversion_id"), finished_at__lt=done_before
            ).delete()
            deleted, _ = done.delete()
        return deleted

    # ------------------------------------------------------------------ reading
    def pauses(self) -> dict[str, PixelPause]:
        """Every recorded pixel pause."""
        with self._errors():
            holds = list(PixelHold.objects.using(self._db()).all())
        return {
            h.pixel_id: PixelPause(
                pixel_id=h.pixel_id, kind=h.kind, reason=h.reason, until=h.until,
                since=h.since, probes=h.probes, status=h.status, code=h.code,
            )
            for h in holds
        }

    def _due_time(self, in_flight: Any) -> Any:
        """When a row is next due: ``in_flight`` for rows in flight, else its due time or the
        end of its pixel's pause."""
        hold_until = PixelHold.objects.using(self._db()).filter(
            pixel_id=OuterRef("pixel_id")).values("until")[:1]
        return Min(
            Case(
                When(state=State.IN_FLIGHT, then=in_flight),
                default=Greatest(
                    F("next_attempt_at"),
                    Coalesce(Subquery(hold_until, output_field=FloatField()), Value(0.0)),
                ),
                output_field=FloatField(),
            )
        )

    def unfinished(self, now: float) -> tuple[int, float | None]:
        """How many rows ``flush()`` waits for, and the earliest moment one of them is due."""
        with self._errors():
            agg = self._rows().filter(state__in=State.UNFINISHED).aggregate(
                # In flight is being answered now: flush() must not give up on it because
                # its lease outlasts the timeout.
                n=Count("id"), due=self._due_time(Value(now, FloatField()))
            )
        return int(agg["n"]), agg["due"]

    def next_due(self, now: float, pixel_ids: Collection[str] | None = None) -> float | None:
        """The earliest moment a claim could return something (lease expiries included)."""
        rows = self._rows().filter(state__in=_NOT_DELIVERED)
        if pixel_ids is not None:
            rows = rows.filter(pixel_id__in=list(pixel_ids))
        with self._errors():
            due = rows.aggregate(due=self._due_time(F("lease_until")))["due"]
        return float(due) if due is not None else None

    def counts(self) -> dict[str, dict[str, int]]:
        """``{event: {state: n}}`` over the whole outbox."""
        result: dict[str, dict[str, int]] = {}
        with self._errors():
            grouped = list(
                self._rows().order_by().values_list("event", "state").annotate(n=Count("id"))
            )
        for event, state, n in grouped:
            result.setdefault(event, {})[state] = n
        return result

    def oldest_unfinished(self) -> float | None:
        """``created_at`` of the oldest row not yet delivered (paused rows included)."""
        with self._errors():
            oldest = self._rows().filter(state__in=_NOT_DELIVERED).aggregate(
                m=Min("created_at"))["m"]
        return float(oldest) if oldest is not None else None

    def last_errors(self) -> dict[str, DeliveryLogEntry]:
        """The latest failed attempt (non-2xx, timeout or refused) for each pixel."""
        log = DeliveryAttempt.objects.using(self._db())
        latest = (
            log.filter(state__in=_FAILED).order_by().values("pixel_id").annotate(m=Max("id"))
            .values("m")
        )
        with self._errors():
            return {a.pixel_id: _entry(a) for a in log.filter(id__in=latest)}

    def rows(self, conversion_id: str) -> list[OutboxRow]:
        """Every row using this conversion id."""
        with self._errors():
            return [_row(r) for r in self._rows().filter(conversion_id=conversion_id)
                    .order_by("id")]

    def find(
        self, *, states: Collection[str] | None = None, event: str | None = None,
        created_since: float | None = None, updated_since: float | None = None,
        updated_before: float | None = None,
    ) -> list[OutboxRow]:
        """Rows matching every given filter, oldest first (reports, ``retry-dead --since``)."""
        rows = self._rows().order_by("id")
        if states is not None:
            rows = rows.filter(state__in=list(states))
        if event is not None:
            rows = rows.filter(event=event)
        if created_since is not None:
            rows = rows.filter(created_at__gte=created_since)
        if updated_since is not None:
            rows = rows.filter(updated_at__gte=updated_since)
        if updated_before is not None:
            rows = rows.filter(updated_at__lt=updated_before)
        with self._errors():
            return [_row(r) for r in rows]

    def attempts(self, conversion_id: str) -> list[DeliveryLogEntry]:
        """The delivery log of a conversion id, oldest first."""
        log = DeliveryAttempt.objects.using(self._db())
        with self._errors():
            return [_entry(a) for a in log.filter(conversion_id=conversion_id).order_by("id")]


# The models mirror the core dataclasses field for field (see models.py).
_ROW_FIELDS = [f.name for f in dataclasses.fields(OutboxRow)]
_LOG_FIELDS = [f.name for f in dataclasses.fields(DeliveryLogEntry)]


def _row(r: OutboxEntry) -> OutboxRow:
    return OutboxRow(**{name: getattr(r, name) for name in _ROW_FIELDS})


def _attempt(e: DeliveryLogEntry) -> DeliveryAttempt:
    return DeliveryAttempt(**{**dataclasses.asdict(e), "identifiers": list(e.identifiers)})


def _entry(a: DeliveryAttempt) -> DeliveryLogEntry:
    values = {name: getattr(a, name) for name in _LOG_FIELDS}
    values["identifiers"] = tuple(a.identifiers)
    return DeliveryLogEntry(**values)


def _factory(settings: TrackLayerSettings) -> DjangoOutbox:
    return DjangoOutbox()


register_outbox("django", _factory)
