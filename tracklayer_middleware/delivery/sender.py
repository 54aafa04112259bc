"""``Sender``: the loop that moves outbox rows to X, in a background thread or in the foreground.

Lifecycle (after sentry-python's ``BackgroundWorker``, but the queue is the durable outbox,
so nothing is ever dropped): the thread starts lazily on the first ``wake()``, restarts when
``os.getpid()`` changed (a forked web worker gets its own thread and HTTP client), sleeps
until the next row is due or it is woken, and on ``stop()`` finishes the batch in flight and
hands every other claimed row back.

One cycle: claim due rows under a lease, group them by pixel into batches of at most
``batch_size``, take tokens from the rate-limit bucket, renew the lease, POST, and record the
outcome of every row (``policy.decide``) with one delivery-log entry per row per attempt.
The lease is renewed before each POST and every third of it while the POST is in flight.
A 400 on a batch is bisected until the bad conversion is alone: the others are delivered and
the bad one goes ``dead`` with X's code, message and parameter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from ..conversion import x_payload
from ..errors import OutboxError
from ..settings import TrackLayerSettings
from . import policy
from .client import SendResult
from .log import DeliveryLogEntry, log_attempt
from .outbox import PAUSE_AUTH, PAUSE_RATE_LIMIT, Outbox, OutboxRow, PixelPause, RowUpdate, State

logger = logging.getLogger("tracklayer.delivery.sender")

#: Longest idle sleep: rows enqueued by other processes sharing the file are seen this fast.
IDLE_POLL_SECONDS = 0.5
#: How often finished rows past ``retention_days`` are pruned.
PRUNE_INTERVAL_SECONDS = 3600.0
#: Pause after the outbox itself failed (disk full, read-only) before trying again.
OUTBOX_ERROR_BACKOFF_SECONDS = 5.0


class Client(Protocol):
    """What the sender needs from ``XConversionsClient``."""

    def send(
        self, conversions: Sequence[dict[str, Any]], *, pixel_id: str | None = None
    ) -> SendResult: ...

    def close(self) -> None: ...


class Bucket(Protocol):
    """What the sender needs from ``ratelimit.TokenBucket``."""

    def acquire(self, tokens: int, *, stop: threading.Event | None = None) -> bool: ...


@dataclass
class _Batch:
    """Claimed rows of one pixel going out together, with their payloads."""

    pixel_id: str
    rows: list[OutboxRow]
    payloads: list[dict[str, Any]]
    identifiers: list[tuple[str, ...]]


class Sender:
    """Delivers the outbox; one per engine and process (see the module docstring)."""

    def __init__(
        self,
        settings: TrackLayerSettings,
        outbox: Outbox,
        client_factory: Callable[[], Client],
        bucket_factory: Callable[[], Bucket],
        *,
        before_cycle: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self._client_factory = client_factory
        self._client: Client | None = None
        self._bucket_factory = bucket_factory
        self._bucket: Bucket | None = None
        self._before_cycle = before_cycle
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        #: Notified after every recorded batch; ``TrackLayer.flush()`` waits on it.
        self.progress = threading.Condition()
        self._next_prune = 0.0
        _senders.add(self)

    def __repr__(self) -> str:
        alive = self.is_alive()
        return f"<Sender outbox={self.outbox!r} running={alive} dry_run={self.settings.dry_run}>"

    # ------------------------------------------------------------------ lifecycle
    def is_alive(self) -> bool:
        """True when this process's sender thread is running."""
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Start the thread if needed (again after a fork) and make it look for work now."""
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self.run, name="tracklayer-sender", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _after_fork(self) -> None:
        # The parent's thread does not exist here and its HTTP connections are shared
        # sockets: start from scratch, never touch (close) the parent's client.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._thread = None
        self._client = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.progress = threading.Condition()

    def stop(self, timeout: float | None = None) -> bool:
        """Finish the batch in flight, hand back other claimed rows, end the thread."""
        self._stop.set()
        self._wake.set()
        thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return False
        self._thread = None
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
            self._client = None
        return True

    # ------------------------------------------------------------------ the loop
    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> None:
        """Deliver until stopped; with ``once``, return when nothing is due right now."""
        stop_event = stop or self._stop
        while not (stop_event.is_set() or self._stop.is_set()):
            try:
                if self._before_cycle is not None:
                    self._before_cycle()
                self._prune()
                handled = self.cycle(stop_event)
            except OutboxError as exc:
                logger.error("TrackLayer sender cannot use the outbox: %s", exc)
                if once:
                    raise
                self._sleep(OUTBOX_ERROR_BACKOFF_SECONDS, stop_event)
                continue
            except Exception:
                # A bug must not end delivery: the batch was handed back; try again shortly.
                logger.exception("TrackLayer sender failed a delivery cycle; retrying")
                if once:
                    raise
                self._sleep(min(OUTBOX_ERROR_BACKOFF_SECONDS, self.settings.retry_max_seconds),
                            stop_event)
                continue
            if handled:
                continue
            if once:
                return
            self._sleep(self._idle_seconds(), stop_event)

    def _prune(self) -> None:
        """Drop finished rows older than ``retention_days`` (at start, then hourly)."""
        now = self._clock()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL_SECONDS
        pruned = self.outbox.purge(done_before=now - self.settings.retention_days * 86400)
        if pruned:
            logger.info("TrackLayer pruned %d finished conversions past retention", pruned)

    def _idle_seconds(self) -> float:
        now = self._clock()
        try:
            due = self.outbox.next_due(now)
        except OutboxError:
            return OUTBOX_ERROR_BACKOFF_SECONDS
        if due is None:
            return IDLE_POLL_SECONDS
        return min(max(due - now, 0.0), IDLE_POLL_SECONDS)

    def _sleep(self, seconds: float, stop: threading.Event) -> None:
        if stop is not self._stop and stop.wait(0):
            return
        self._wake.wait(seconds)
        self._wake.clear()

    def cycle(self, stop: threading.Event | None = None) -> int:
        """Claim one batch-size of due rows and deliver them; returns how many were claimed."""
        settings = self.settings
        owner, rows = self.outbox.claim(
            settings.batch_size, lease_seconds=settings.lease_seconds, now=self._clock()
        )
        if not rows:
            return 0
        pending, unreadable = _batches(rows, settings)
        if unreadable:
            self._bury(owner, unreadable)
        try:
            while pending:
                if stop is not None and stop.is_set():
                    break
                batch = pending[0]
                self._deliver(
                    owner, batch, remaining=[r.id for b in pending[1:] for r in b.rows],
                    stop=stop,
                )
                pending.pop(0)
        finally:
            # Stopping, or an unexpected error: unsent rows are due again at once (rows
            # already recorded are no longer ours and are left alone).
            self._hand_back(owner, [row for batch in pending for row in batch.rows])
        with self.progress:
            self.progress.notify_all()
        return len(rows)

    def _bury(self, owner: str, rows: list[tuple[OutboxRow, str]]) -> None:
        """Rows whose stored record cannot be read back go ``dead`` at once, with the reason."""
        now = self._clock()
        entries = [
            DeliveryLogEntry(
                conversion_id=row.conversion_id, event=row.event, pixel_id=row.pixel_id,
                attempt=row.attempts + 1, state=State.DEAD, started_at=now, finished_at=now,
                error_code="UNREADABLE_RECORD", error_message=reason,
            )
            for row, reason in rows
        ]
        self.outbox.finish(
            [RowUpdate(row.id, owner, State.DEAD, attempts=row.attempts,
                       code="UNREADABLE_RECORD", error=reason) for row, reason in rows],
            entries, now=now,
        )
        for entry in entries:
            log_attempt(entry)

    def _hand_back(self, owner: str, rows: list[OutboxRow]) -> None:
        if not rows:
            return
        self.outbox.finish(
            [
                RowUpdate(
                    row.id, owner, State.RETRYING if row.attempts else State.PENDING,
                    attempts=row.attempts,
                )
                for row in rows
            ],
            [],
            now=self._clock(),
        )

    # ------------------------------------------------------------------ one batch
    def _deliver(
        self, owner: str, batch: _Batch, *, remaining: list[int], stop: threading.Event | None
    ) -> None:
        if self.settings.dry_run:
            self._record(owner, batch, State.DRY_RUN, self._clock())
            return
        if self._bucket is None:
            self._bucket = self._bucket_factory()
        if not self._bucket.acquire(len(batch.rows), stop=stop):
            self._hand_back(owner, batch.rows)  # stopping: leave them for the next sender
            return
        started = self._clock()
        if self._client is None:
            self._client = self._client_factory()
        with self._leased(owner, [r.id for r in batch.rows] + remaining):
            result = self._client.send(batch.payloads, pixel_id=batch.pixel_id)
        now = self._clock()
        firsts = [r.first_attempt_at for r in batch.rows if r.first_attempt_at is not None]
        pause = self.outbox.pauses().get(batch.pixel_id)
        decision = policy.decide(
            result,
            attempts=min(r.attempts for r in batch.rows) + 1,
            first_attempt_at=_utc(min(firsts)) if firsts else None,
            now=_utc(now),
            settings=self.settings,
            batch_size=len(batch.rows),
            probes=pause.probes + 1 if pause is not None and pause.kind == PAUSE_AUTH else 0,
        )
        if decision.action == "bisect":
            # The refused POST was a real attempt of every row: log it, then send the halves.
            self._record(owner, batch, State.RETRYING, started, result, decision, final=False)
            tried = _Batch(
                batch.pixel_id,
                [dataclasses.replace(r, attempts=r.attempts + 1) for r in batch.rows],
                batch.payloads, batch.identifiers,
            )
            half = len(batch.rows) // 2
            for part in (_slice(tried, 0, half), _slice(tried, half, len(batch.rows))):
                self._deliver(owner, part, remaining=remaining, stop=stop)
            return
        if decision.action == "sent":
            self._record(owner, batch, State.SENT, started, result, decision)
            if pause is not None:
                self._resume(pause)
            self._slow_down(batch.pixel_id, result, stop)
        elif decision.action == "dead":
            self._record(owner, batch, State.DEAD, started, result, decision)
        elif decision.action == "retry":
            self._record(owner, batch, State.RETRYING, started, result, decision)
        else:
            self._pause(owner, batch, started, result, decision, pause)

    @contextlib.contextmanager
    def _leased(self, owner: str, row_ids: list[int]) -> Iterator[None]:
        """Renew the lease now, and every third of it while the body runs: httpx timeouts
        are per phase, so a slowly dripping answer can outlast ``timeout_seconds``."""
        lease = self.settings.lease_seconds
        self.outbox.renew(owner, row_ids, until=self._clock() + lease)
        done = threading.Event()

        def keep_renewing() -> None:
            while not done.wait(lease / 3):
                try:
                    self.outbox.renew(owner, row_ids, until=self._clock() + lease)
                except OutboxError as exc:
                    logger.error("TrackLayer could not renew a lease: %s", exc)

        renewer = threading.Thread(target=keep_renewing, name="tracklayer-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()

    def _pause(
        self, owner: str, batch: _Batch, started: float, result: SendResult,
        decision: policy.Decision, previous: PixelPause | None,
    ) -> None:
        now = self._clock()
        if decision.cause == "rate_limited":
            kind, state = PAUSE_RATE_LIMIT, State.RETRYING
            delay = decision.pause_seconds or 0.0
        else:
            kind, state = PAUSE_AUTH, State.PAUSED
            probes = previous.probes + 1 if previous is not None and previous.kind == kind else 0
            delay = probe_delay(probes, self.settings)
        self.outbox.pause(
            PixelPause(
                pixel_id=batch.pixel_id, kind=kind, reason=decision.reason, until=now + delay,
                since=previous.since if previous is not None else now,
                probes=probes if kind == PAUSE_AUTH else 0,
                status=result.status_code, code=decision.error_code,
            ),
            now=now,
        )
        if kind == PAUSE_AUTH and (previous is None or previous.kind != PAUSE_AUTH):
            logger.error(
                "TrackLayer paused delivery to pixel %s: %s", batch.pixel_id, decision.reason
            )
        self._record(owner, batch, state, started, result, decision, next_attempt_at=now + delay)

    def _resume(self, pause: PixelPause) -> None:
        resumed = self.outbox.resume(pause.pixel_id, now=self._clock())
        logger.log(
            logging.WARNING if pause.kind == PAUSE_AUTH else logging.INFO,
            "TrackLayer resumed delivery to pixel %s (%d waiting conversions released)",
            pause.pixel_id, resumed,
        )
        self._wake.set()

    def _slow_down(self, pixel_id: str, result: SendResult, stop: threading.Event | None) -> None:
        """Spread what is left of X's rate-limit window, before X has to answer 429."""
        delay = policy.slowdown_from_headers(
            result.rate_limit_remaining, result.rate_limit_reset, _utc(self._clock())
        )
        if delay >= 1.0:  # long: tell every process sharing the outbox
            now = self._clock()
            self.outbox.pause(PixelPause(
                pixel_id, PAUSE_RATE_LIMIT, "X's rate-limit budget is nearly spent",
                until=now + delay, since=now,
            ), now=now)
        elif delay > 0 and stop is not None:
            stop.wait(delay)

    def _record(
        self,
        owner: str,
        batch: _Batch,
        state: str,
        started: float,
        result: SendResult | None = None,
        decision: policy.Decision | None = None,
        *,
        next_attempt_at: float | None = None,
        final: bool = True,
    ) -> None:
        """Write the outcome of one attempt for every row of the batch, and log it."""
        finished = self._clock()
        if next_attempt_at is None and decision is not None and decision.next_attempt_at:
            next_attempt_at = decision.next_attempt_at.timestamp()
        failed = decision is not None and decision.action != "sent"
        code = decision.error_code if decision is not None and failed else None
        message = _message(decision) if failed else None
        counts = result is not None and (decision is None or decision.consume_attempt)
        updates, entries = [], []
        for row, names in zip(batch.rows, batch.identifiers, strict=True):
            updates.append(RowUpdate(
                row.id, owner, state, attempts=row.attempts + 1 if counts else row.attempts,
                first_attempt_at=started if result is not None else None,
                next_attempt_at=next_attempt_at,
                status=result.status_code if result else None,
                code=code,
                error=decision.reason if failed and decision is not None else None,
            ))
            entries.append(DeliveryLogEntry(
                conversion_id=row.conversion_id, event=row.event, pixel_id=row.pixel_id,
                attempt=row.attempts + 1, state=state, started_at=started, finished_at=finished,
                http_status=result.status_code if result else None,
                error_code=code,
                error_message=message,
                debug_id=result.debug_id if result else None,
                identifiers=names,
                latency_ms=result.latency_ms if result else None,
            ))
        # A bisect step (not final) keeps the rows claimed: only the attempt is logged.
        self.outbox.finish(updates if final else [], entries, now=finished)
        for entry in entries:
            log_attempt(entry)


_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    # A lock held by a parent thread at fork() would stay locked in the child forever.
    for sender in list(_senders):
        sender._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def probe_delay(probes: int, settings: TrackLayerSettings) -> float:
    """Wait before probing an auth-paused pixel again: the policy's 1 min → 15 min ladder,
    scaled down when ``retry_max_seconds`` is smaller (tests, impatient operators)."""
    base = min(policy.PROBE_BASE_SECONDS, settings.retry_max_seconds)
    cap = min(policy.PROBE_MAX_SECONDS, max(base, 3 * settings.retry_max_seconds))
    return policy.probe_delay(probes, base=base, cap=cap)


def _message(decision: policy.Decision | None) -> str | None:
    if decision is None:
        return None
    text = decision.error_message or decision.reason
    return f"{text} [{decision.error_parameter}]" if decision.error_parameter else text


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _batches(
    rows: list[OutboxRow], settings: TrackLayerSettings
) -> tuple[list[_Batch], list[tuple[OutboxRow, str]]]:
    """Rows grouped by pixel into batches of at most ``batch_size``, with their payloads;
    and the rows whose record could not be turned back into a conversion."""
    by_pixel: dict[str, list[tuple[OutboxRow, dict[str, Any], tuple[str, ...]]]] = (
        defaultdict(list)
    )
    unreadable: list[tuple[OutboxRow, str]] = []
    for row in rows:
        try:
            payload = x_payload(row.record, send_external_id=settings.send_external_id)
            names = tuple(row.record.get("identifiers", ()))
            if not all(isinstance(name, str) for name in names):
                raise TypeError("identifier names are not text")
        except Exception as exc:  # an old or damaged row must not block the others
            unreadable.append((row, f"stored record unreadable: {type(exc).__name__}: {exc}"))
        else:
            by_pixel[row.pixel_id].append((row, payload, names))
    batches = []
    for pixel, entries in by_pixel.items():
        for start in range(0, len(entries), settings.batch_size):
            chunk = entries[start:start + settings.batch_size]
            batches.append(_Batch(
                pixel_id=pixel,
                rows=[row for row, _, _ in chunk],
                payloads=[payload for _, payload, _ in chunk],
                identifiers=[names for _, _, names in chunk],
            ))
    return batches, unreadable


def _slice(batch: _Batch, start: int, end: int) -> _Batch:
    return _Batch(
        batch.pixel_id, batch.rows[start:end], batch.payloads[start:end],
        batch.identifiers[start:end],
    )
