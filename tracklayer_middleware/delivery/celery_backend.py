"""Celery delivery (``delivery="celery"``, extra ``[celery]``): many web hosts, many workers.

Web processes enqueue; Celery workers send. What crosses the broker is only what X needs:
``Conversion.to_record()`` (hashes, never raw email or phone), in a task named
``tracklayer.deliver`` on the host's Celery app.

Shared state lives in Redis (the broker's Redis): one hash per conversion holding its state,
owner task, attempts and last error; the delivery log (a list per conversion id); pixel
pauses; counters and indexes for ``stats()``/``flush()``/``trace()``. Every change is one Lua
script, so it is atomic across hosts. Keys expire ``retention_days`` after their last change
(that is the Celery backend's ``purge``).

Exactly-once towards X, as far as HTTP allows:

* **Enqueue is idempotent** — the conversion's hash is created only if absent
  (``(pixel, event id, conversion id)``), so a second ``convert()`` of the same action on any
  host is a no-op, and only new conversions are published. A hash whose task never reached
  the broker (the enqueuer died in between) is taken over by the next enqueue of it.
* **The task owns its conversions** — each hash records the id of the one task that may send
  it. A redelivered message (worker killed: ``acks_late`` + ``reject_on_worker_lost``) or a
  Celery retry has the same task id and carries on; a duplicate message never sends.
* **Sending takes a lease** — a task marks rows ``in_flight`` until ``lease_seconds`` before
  POSTing, so two copies of one task (a visibility-timeout redelivery while the first still
  runs) never POST the same conversion at once. A worker killed in the middle of a POST
  leaves the lease to run out, then the conversion is sent again with the same
  conversion_id, which X deduplicates.
* **Final states are kept** — ``sent``/``dead``/... stay in the hash, so a redelivered task
  finds them done and sends nothing.

Inside the task the standard ``Sender`` does the work with the same client, policy, bisecting
and delivery log as everywhere else, over a small outbox view of the task's own conversions;
when some must wait (5xx backoff, 429 or auth pause), the task re-schedules itself with
Celery's ``retry(countdown=...)`` instead of sleeping in a worker slot. The rate limit is
one ``RedisTokenBucket`` shared by every worker.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, OutboxError
from ..settings import TrackLayerSettings
from .log import DeliveryLogEntry
from .outbox import OutboxRow, PixelPause, RowUpdate, State
from .redis_ratelimit import RedisTokenBucket
from .redis_store import RedisDeliveryStore

if TYPE_CHECKING:
    from ..conversion import Conversion

TASK_NAME = "tracklayer.deliver"
#: Countdown of a task whose Redis was unreachable.
STORE_RETRY_SECONDS = 5.0
#: Longest countdown a task sets (the longest auth-probe interval): a task that wakes while
#: its pixel is still paused simply schedules itself again. It must stay below the Redis
#: transport's ``visibility_timeout`` (1 h by default), or the broker redelivers the waiting
#: message early (harmless — leases and task ownership make the copy a no-op — but wasteful).
MAX_COUNTDOWN_SECONDS = 15 * 60.0

_FINAL = frozenset({State.SENT, State.DEAD, *State.DONE})


class CeleryOutbox:
    """The ``Outbox`` of a web process in ``delivery="celery"`` mode.

    ``enqueue`` records each new conversion in Redis and publishes ``tracklayer.deliver``
    tasks (per pixel, at most ``batch_size`` conversions each); the reading methods report the
    shared state, so ``stats()``, ``trace()`` and ``flush()`` see every host and worker.
    There is nothing to claim here: Celery workers send.
    """

    def __init__(self, settings: TrackLayerSettings, *, app: Any = None,
                 store: RedisDeliveryStore | None = None) -> None:
        self.settings = settings
        self.app = app if app is not None else celery_app_for(settings)
        self.store = store if store is not None else store_for(settings, self.app)

    def __repr__(self) -> str:
        return f"CeleryOutbox(task={TASK_NAME!r}, store={self.store!r})"

    # ------------------------------------------------------------------ writing
    def enqueue(self, conversions: Sequence[Conversion], *, now: float) -> list[bool]:
        """Record new conversions and publish their tasks; False where one already existed."""
        inserted: list[bool] = []
        task_of_chunk: dict[tuple[str, int], str] = {}
        per_pixel: Counter[str] = Counter()
        to_publish: dict[str, list[dict[str, Any]]] = {}
        for conversion in conversions:
            record = conversion.to_record()
            task_id = ""  # skipped (consent, no identifier): recorded, never sent
            if conversion.initial_state == State.PENDING:
                pixel = conversion.pixel_id
                chunk = (pixel, per_pixel[pixel] // self.settings.batch_size)
                per_pixel[pixel] += 1
                task_id = task_of_chunk.setdefault(chunk, uuid.uuid4().hex)
            created = self.store.add(
                self.store.key_of(record), conversion.conversion_id,
                _fields(record, state=conversion.initial_state, task=task_id, now=now),
            )
            inserted.append(created)
            if created and task_id:
                to_publish.setdefault(task_id, []).append(record)
        for task_id, records in to_publish.items():
            try:
                self._publish(task_id, records)
            except OutboxError:
                for record in records:  # so that converting again starts afresh
                    self.store.forget(self.store.key_of(record), record["conversion_id"], task_id)
                raise
        return inserted

    def _publish(self, task_id: str, records: list[dict[str, Any]]) -> None:
        """Send one ``tracklayer.deliver`` message, then mark its conversions published."""
        try:
            self.app.send_task(TASK_NAME, kwargs={"records": records}, task_id=task_id)
        except Exception as exc:  # kombu/redis raise many types; none may lose a conversion
            raise OutboxError(
                f"could not publish {len(records)} conversions to Celery ({exc}); check the "
                "broker (celery_broker_url / the host's Celery app)."
            ) from exc
        self.store.mark_published([self.store.key_of(r) for r in records], task_id)

    def claim(
        self, limit: int, *, lease_seconds: float, now: float,
        pixel_ids: Collection[str] | None = None,
    ) -> tuple[str, list[OutboxRow]]:
        """Nothing to claim in a web process: Celery workers send."""
        return "", []

    def renew(self, lease_owner: str, row_ids: Sequence[int], *, until: float) -> None:
        """No leases are held here."""

    def finish(
        self, updates: Sequence[RowUpdate], entries: Sequence[DeliveryLogEntry], *, now: float
    ) -> int:
        """Append log entries (e.g. the engine's ``skipped_consent`` records)."""
        self.store.log(entries)
        return 0

    def pause(self, pause: PixelPause, *, now: float) -> None:
        """Put a pixel on hold for every worker."""
        self.store.set_pause(pause)

    def resume(self, pixel_id: str, *, now: float) -> int:
        """Lift the pause; the pixel's ``paused`` conversions are due now (their tasks are
        already scheduled for the next probe and send them then)."""
        self.store.clear_pause(pixel_id)
        resumed = 0
        of_pixel = f"{self.store.prefix}:c:{pixel_id}:"
        for key in self.store.members("paused"):
            if key.startswith(of_pixel):
                resumed += self.store.update(
                    key, {"state": State.PENDING, "next_attempt_at": now, "updated_at": now},
                    states=[State.PAUSED])
        return resumed

    def retry_dead(
        self, *, now: float, conversion_ids: Collection[str] | None = None,
        event: str | None = None,
    ) -> int:
        """Dead conversions (filtered) get a fresh budget and a new task."""
        wanted = None if conversion_ids is None else set(conversion_ids)
        revived: dict[str, list[dict[str, Any]]] = {}
        for key in self.store.members("dead"):
            row = self.store.row(key)
            if row is None or (wanted is not None and row.conversion_id not in wanted):
                continue
            if event is not None and row.event != event:
                continue
            task_id = uuid.uuid4().hex
            if self.store.update(
                key,
                {"state": State.PENDING, "attempts": 0, "first_attempt_at": None,
                 "next_attempt_at": now, "updated_at": now, "task": task_id},
                states=[State.DEAD],
            ):
                revived[task_id] = [row.record]
        for task_id, records in revived.items():
            try:
                self._publish(task_id, records)
            except OutboxError:
                for record in records:  # still dead: a later retry-dead finds it again
                    self.store.update(self.store.key_of(record), {"state": State.DEAD},
                                      task=task_id)
                raise
        return len(revived)

    def purge(self, *, done_before: float) -> int:
        """Nothing to do: Redis expires entries ``retention_days`` after their last change."""
        return 0

    # ------------------------------------------------------------------ reading
    def pauses(self) -> dict[str, PixelPause]:
        """Every recorded pause, by pixel id."""
        return self.store.pauses()

    def unfinished(self, now: float) -> tuple[int, float | None]:
        """Conversions Celery has not finished, from every host."""
        return self.store.unfinished()

    def next_due(self, now: float, pixel_ids: Collection[str] | None = None) -> float | None:
        """None: a local sender never has anything to claim here."""
        return None

    def counts(self) -> dict[str, dict[str, int]]:
        """``{event: {state: n}}``."""
        return self.store.counts()

    def oldest_unfinished(self) -> float | None:
        """``created_at`` of the oldest conversion still waiting to be delivered."""
        return self.store.oldest_waiting()

    def last_errors(self) -> dict[str, DeliveryLogEntry]:
        """The most recent failed attempt per pixel."""
        return self.store.last_errors()

    def rows(self, conversion_id: str) -> list[OutboxRow]:
        """Every conversion using this id (one per pixel/event)."""
        rows = (self.store.row(k, i) for i, k in enumerate(self.store.keys_of(conversion_id)))
        return [r for r in rows if r is not None]

    def find(
        self, *, states: Collection[str] | None = None, event: str | None = None,
        created_since: float | None = None, updated_since: float | None = None,
        updated_before: float | None = None,
    ) -> list[OutboxRow]:
        """Conversions matching every given filter, oldest first (scans the store)."""
        found = []
        for row in self.store.scan_rows():
            if (
                (states is None or row.state in states)
                and (event is None or row.event == event)
                and (created_since is None or row.created_at >= created_since)
                and (updated_since is None or row.updated_at >= updated_since)
                and (updated_before is None or row.updated_at < updated_before)
            ):
                found.append(row)
        return sorted(found, key=lambda r: (r.created_at, r.conversion_id))

    def attempts(self, conversion_id: str) -> list[DeliveryLogEntry]:
        """The delivery log of a conversion id, oldest first."""
        return self.store.attempts(conversion_id)

    def close(self) -> None:
        """Close the Redis connections of this process."""
        self.store.client.close()


class _TaskOutbox(CeleryOutbox):
    """The conversions of one ``tracklayer.deliver`` run, as an outbox the ``Sender`` drives.

    Row ids are positions in the task's record list; every write is conditional on this
    task owning the conversion (and, for outcomes, on still holding its lease).
    """

    def __init__(self, settings: TrackLayerSettings, store: RedisDeliveryStore, task_id: str,
                 records: Sequence[Mapping[str, Any]]) -> None:
        self.settings = settings
        self.app = None
        self.store = store
        self.task_id = task_id
        self.records = [dict(r) for r in records]
        self.keys = [store.key_of(r) for r in records]

    def claim(
        self, limit: int, *, lease_seconds: float, now: float,
        pixel_ids: Collection[str] | None = None,
    ) -> tuple[str, list[OutboxRow]]:
        """Lease this task's due conversions whose pixel is not on hold."""
        owner = uuid.uuid4().hex
        held = {p for p, pause in self.store.pauses().items() if pause.until > now}
        claimed: list[OutboxRow] = []
        for i, (key, record) in enumerate(zip(self.keys, self.records, strict=True)):
            if len(claimed) >= limit or record["pixel_id"] in held:
                continue
            if pixel_ids is not None and record["pixel_id"] not in pixel_ids:
                continue
            taken = self.store.update(
                key,
                {"state": State.IN_FLIGHT, "lease_owner": owner,
                 "lease_until": now + lease_seconds, "updated_at": now},
                task=self.task_id,
                states=[State.PENDING, State.RETRYING, State.IN_FLIGHT, State.PAUSED],
                due_at=now,
            )
            row = self.store.row(key, i) if taken else None
            if row is not None:
                claimed.append(row)
        return owner, claimed

    def renew(self, lease_owner: str, row_ids: Sequence[int], *, until: float) -> None:
        """Extend the lease of rows this claim still holds."""
        for i in row_ids:
            self.store.update(self.keys[i], {"lease_until": until}, lease_owner=lease_owner,
                              states=[State.IN_FLIGHT])

    def finish(
        self, updates: Sequence[RowUpdate], entries: Sequence[DeliveryLogEntry], *, now: float
    ) -> int:
        """Append the log, then apply outcomes where the lease still holds.

        Log first: a reader that sees a row ``sent`` (``flush()``, then ``trace()``) must
        find its attempt; the other order showed a sent row without it for a moment.
        """
        self.store.log(entries)
        applied = 0
        for u in updates:
            changes: dict[str, Any] = {
                "state": u.state, "attempts": u.attempts, "lease_owner": None,
                "lease_until": None, "last_status": u.status, "last_code": u.code,
                "last_error": u.error, "updated_at": now,
            }
            if u.next_attempt_at is not None:
                changes["next_attempt_at"] = u.next_attempt_at
            first = {"first_attempt_at": u.first_attempt_at} if u.first_attempt_at else None
            applied += self.store.update(
                self.keys[u.row_id], changes, lease_owner=u.lease_owner,
                states=[State.IN_FLIGHT], set_if_missing=first,
            )
        return applied

    def next_run(self, now: float) -> float | None:
        """Seconds until this task has something to do again; None when all are done."""
        pauses = self.store.pauses()
        due: list[float] = []
        for key in self.keys:
            h = self.store.get(key)
            if h is None or h.get("task") != self.task_id or h["state"] in _FINAL:
                continue
            at = float(h["lease_until"] if h["state"] == State.IN_FLIGHT else
                       h["next_attempt_at"])
            pause = pauses.get(h["pixel_id"])
            if pause is not None and pause.until > now:
                at = max(at, pause.until)
            due.append(at)
        return max(0.0, min(due) - now) if due else None


# ---------------------------------------------------------------------- wiring
def celery_app_for(settings: TrackLayerSettings) -> Any:
    """The host's Celery app (``celery_app="proj.celery:app"``) or one for the broker URL."""
    if settings.celery_app:
        module_name, _, attr = settings.celery_app.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in (attr or "app").split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"celery_app {settings.celery_app!r} cannot be imported ({exc}): give it as "
                "'package.module:attribute', e.g. 'proj.celery:app'."
            ) from exc
        return obj
    try:
        from celery import Celery
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "delivery='celery' needs Celery: pip install 'tracklayer-middleware[celery]'."
        ) from exc
    return Celery("tracklayer", broker=settings.celery_broker_url, set_as_current=False)


def store_for(settings: TrackLayerSettings, app: Any) -> RedisDeliveryStore:
    """The shared store on the Celery app's Redis broker."""
    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"delivery='celery' keeps its shared state in the broker's Redis, but the broker is "
            f"{url.split('://')[0] or 'not set'!r}: use a redis:// broker URL."
        )
    import redis

    return RedisDeliveryStore(
        redis.Redis.from_url(url, socket_timeout=30, health_check_interval=30),
        ttl_seconds=settings.retention_days * 86400,
    )


_Parts = tuple[TrackLayerSettings, RedisDeliveryStore, Any, RedisTokenBucket]


class _WorkerRuntime:
    """Per worker process: settings, store, X client and shared bucket, made on first use."""

    def __init__(
        self, app: Any, settings: TrackLayerSettings | Callable[[], TrackLayerSettings]
    ) -> None:
        self._app = app
        self._settings_source = settings
        self._lock = threading.Lock()
        self._pid = -1
        self._parts: _Parts | None = None

    def parts(self) -> _Parts:
        with self._lock:
            if self._parts is None or self._pid != os.getpid():  # prefork children rebuild
                from .client import XConversionsClient

                source = self._settings_source
                settings = source if isinstance(source, TrackLayerSettings) else source()
                store = store_for(settings, self._app)
                bucket = RedisTokenBucket(
                    store.client, f"{store.prefix}:ratelimit:{settings.pixel_id}",
                    rate_per_15min=settings.rate_limit_per_15min,
                )
                self._parts = (settings, store, XConversionsClient(settings), bucket)
                self._pid = os.getpid()
            return self._parts

    def deliver(self, task: Any, records: Sequence[Mapping[str, Any]]) -> str:
        from .sender import Sender

        settings, store, client, bucket = self.parts()
        outbox = _TaskOutbox(settings, store, task.request.id, records)
        sender = Sender(settings, outbox, lambda: client, lambda: bucket)
        try:
            sender.run(once=True)
            wait = outbox.next_run(time.time())
        except OutboxError as exc:
            raise task.retry(exc=exc, countdown=STORE_RETRY_SECONDS) from exc
        if wait is None:
            return "done"
        raise task.retry(countdown=min(wait, MAX_COUNTDOWN_SECONDS))


def register_task(
    app: Any, settings: TrackLayerSettings | Callable[[], TrackLayerSettings]
) -> Any:
    """Register ``tracklayer.deliver`` on the host's Celery app (call it in the module that
    the worker loads, e.g. ``proj/celery.py``). ``settings`` may be a zero-argument callable
    (read lazily in the worker, e.g. from Django settings). Returns the task."""
    runtime = _WorkerRuntime(app, settings)

    def deliver(task: Any, records: list[dict[str, Any]]) -> str:
        return runtime.deliver(task, records)

    return app.task(
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
        max_retries=None, ignore_result=True,
    )(deliver)


# ---------------------------------------------------------------------- helpers
def _fields(record: Mapping[str, Any], *, state: str, task: str, now: float) -> dict[str, Any]:
    fields = {
        "pixel_id": record["pixel_id"], "event": record["event"],
        "event_id": record["event_id"], "conversion_id": record["conversion_id"],
        "record": json.dumps(record, separators=(",", ":")), "state": state, "task": task,
        "attempts": 0, "created_at": now, "updated_at": now, "next_attempt_at": now,
    }
    if not task:  # skipped: nothing to publish
        fields["published"] = 1
    return fields
