"""``TrackLayer``: the engine — settings, the durable outbox and the sender, behind one object.

Durability: ``convert()`` (out of a request) returns only once the row is committed, and
raises ``OutboxError`` if it cannot be. ``handoff()`` (after a response) never raises into the
request path: when the outbox cannot be written it logs an ERROR and keeps the conversions in
a bounded in-memory buffer that the sender keeps trying to commit (and ``flush()`` waits for).

Delivery modes: ``"background"`` starts one sender thread per process, lazily (on the first
commit, or at start when the outbox already holds rows); ``"worker"`` and ``"celery"`` only
enqueue here, and ``run_worker()`` (the ``tracklayer worker`` command) does the sending.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .attribution import Attribution, AttributionCodec
from .consent import Consent
from .conversion import Conversion, build_conversion
from .delivery.log import DeliveryLogEntry, log_attempt
from .delivery.outbox import Outbox, State, open_outbox
from .delivery.report import Trace, build_stats
from .delivery.sender import Bucket, Client, Sender
from .errors import OutboxError
from .settings import TrackLayerSettings

if TYPE_CHECKING:
    from .tracker import Tracker

logger = logging.getLogger("tracklayer")

#: Conversions kept in memory while the outbox cannot be written; beyond this the oldest go.
MAX_BUFFERED = 10_000
#: How often ``flush()`` looks at the outbox for progress made by other processes.
FLUSH_POLL_SECONDS = 0.05

_engines: weakref.WeakSet[TrackLayer] = weakref.WeakSet()


class TrackLayer:
    """The TrackLayer engine for one pixel configuration.

    ``settings`` is a ``TrackLayerSettings``, a mapping for ``from_mapping()`` (snake_case,
    UPPER_CASE or the guide's camelCase) or None (keyword overrides only). ``outbox`` (an
    ``Outbox`` object; a string is the ``outbox`` setting), ``client`` and ``bucket`` replace
    the configured backend, the X client and the rate limiter (tests, integrations).
    """

    def __init__(
        self,
        settings: TrackLayerSettings | Mapping[str, Any] | None = None,
        *,
        outbox: Outbox | str | None = None,
        client: Client | None = None,
        bucket: Bucket | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(outbox, str):  # ``outbox="memory"`` is the setting, not a backend
            overrides["outbox"], outbox = outbox, None
        if isinstance(settings, TrackLayerSettings):
            self.settings = settings.replace(**overrides) if overrides else settings
        else:
            self.settings = TrackLayerSettings.from_mapping(settings or {}, **overrides)
        self.codec = AttributionCodec(self.settings)
        self.outbox: Outbox = outbox if outbox is not None else open_outbox(self.settings)
        self._buffer: deque[Conversion] = deque()
        self._buffer_lock = threading.Lock()
        self._buffer_drain = threading.Lock()  # one thread at a time commits the buffer
        self._handoffs = 0
        # Trackers of requests that queued conversions and whose hand-off has not run yet.
        # Weak: a tracker its framework abandons (no close() ever) cannot hold flush() forever.
        self._owed: weakref.WeakSet[Tracker] = weakref.WeakSet()
        self._closed = False
        self.sender = Sender(
            self.settings,
            self.outbox,
            (lambda: client) if client is not None else self._make_client,
            (lambda: bucket) if bucket is not None else self._make_bucket,
            before_cycle=self._commit_buffer,
        )
        _engines.add(self)
        if self.dry_run:
            logger.warning(
                "TrackLayer runs DRY: environment %r is not in allowed_environments %r; "
                "conversions are queued and logged as dry_run but never sent to X.",
                self.settings.environment, self.settings.allowed_environments,
            )
        self._start_if_backlog()

    def __repr__(self) -> str:
        return (
            f"<TrackLayer pixel={self.settings.pixel_id} outbox={self.outbox!r} "
            f"delivery={self.settings.delivery} dry_run={self.dry_run}>"
        )

    @property
    def dry_run(self) -> bool:
        """True when this process builds and logs everything but never calls X."""
        return self.settings.dry_run

    @property
    def sends_here(self) -> bool:
        """True when this process runs a background sender (``delivery="background"``)."""
        return self.settings.delivery == "background"

    # ------------------------------------------------------------------ conversions
    def convert(
        self,
        event: str,
        *,
        attribution: Attribution | str | None = None,
        consent: Consent | None = None,
        **fields: Any,
    ) -> Conversion:
        """Validate, commit to the outbox and return a conversion (out of a request).

        ``attribution`` is ``tracker.attribution_token``, a raw twclid (the caller asserts
        consent), an ``Attribution`` or None. Returns after the row is committed; raises
        ``ConversionError`` for bad input and ``OutboxError`` when the outbox is unusable.
        Converting the same (event, conversion_id) again is a logged no-op.
        """
        conversion = build_conversion(
            self.settings, event, attribution=attribution, consent=consent, **fields
        )
        if self.settings.enabled:
            self._commit([conversion])
        return conversion

    def tracker(
        self, attribution: Attribution | None = None, consent: Consent | None = None
    ) -> Tracker:
        """A request-scoped ``Tracker`` bound to this engine."""
        from .tracker import Tracker

        return Tracker(self, attribution=attribution, consent=consent)

    def expect_handoff(self, tracker: Tracker) -> None:
        """A request queued conversions: ``flush()`` waits until ``settle_handoff(tracker)``.

        Announced by the middleware's tracker at the first ``convert()`` of a request, so a
        ``flush()`` right after the client got its response cannot miss the hand-off the
        server is about to run (``close()``, the last ASGI body message).
        """
        with self._buffer_lock:
            self._owed.add(tracker)

    def settle_handoff(self, tracker: Tracker) -> None:
        """The hand-off (or drop) announced by ``expect_handoff()`` is over."""
        with self._buffer_lock:
            self._owed.discard(tracker)

    def handoff(self, conversions: Sequence[Conversion]) -> None:
        """Commit a finished request's conversions and wake the sender; never raises.

        Blocking (a short SQLite write): call it off the event loop. When the outbox cannot
        be written the conversions stay in a bounded memory buffer, retried by the sender.
        """
        if not conversions or not self.settings.enabled:
            return
        with self._buffer_lock:
            self._handoffs += 1
        try:
            if not self.sends_here:
                self._retry_buffer()  # no sender thread here to retry an earlier outage
            self._commit(conversions)
        except OutboxError as exc:
            self._buffer_conversions(conversions, exc)
        except Exception:  # a bug must not turn into a failed request
            logger.exception("TrackLayer could not hand off %d conversions", len(conversions))
        finally:
            with self._buffer_lock:
                self._handoffs -= 1

    def _commit(self, conversions: Sequence[Conversion]) -> None:
        now = time.time()
        inserted = self.outbox.enqueue(conversions, now=now)
        skipped: list[DeliveryLogEntry] = []
        for conversion, new in zip(conversions, inserted, strict=True):
            if not new:
                logger.info(
                    "conversion %s (%s) is already queued; ignoring the repeat",
                    conversion.conversion_id, conversion.event,
                )
            elif conversion.initial_state != State.PENDING:
                skipped.append(DeliveryLogEntry(
                    conversion_id=conversion.conversion_id, event=conversion.event,
                    pixel_id=conversion.pixel_id, attempt=0, state=conversion.initial_state,
                    started_at=now, finished_at=now,
                    identifiers=tuple(conversion.identifier_names()),
                ))
        if skipped:
            self.outbox.finish([], skipped, now=now)
            for entry in skipped:
                log_attempt(entry)
        if self.sends_here and any(inserted):
            self.sender.wake()

    def _buffer_conversions(self, conversions: Sequence[Conversion], exc: OutboxError) -> None:
        with self._buffer_lock:
            self._buffer.extend(conversions)
            dropped = max(0, len(self._buffer) - MAX_BUFFERED)
            for _ in range(dropped):
                self._buffer.popleft()
            buffered = len(self._buffer)
        logger.error(
            "TrackLayer could not write %d conversions to the outbox; keeping %d in memory "
            "and retrying: %s", len(conversions), buffered, exc,
        )
        if dropped:
            logger.error(
                "TrackLayer memory buffer is full: %d conversions were LOST. Fix the outbox.",
                dropped,
            )
        if self.sends_here:
            self.sender.wake()

    def _commit_buffer(self) -> None:
        """Retry conversions the outbox refused earlier (the sender loop, or ``_retry_buffer``)."""
        if not self._buffer or not self._buffer_drain.acquire(blocking=False):
            return
        try:
            with self._buffer_lock:
                batch = list(self._buffer)
            if not batch:
                return
            # Kept in the buffer until committed, so flush() never sees them nowhere. Only
            # the holder of _buffer_drain consumes; hand-offs only append (and trim when full).
            self._commit(batch)
            with self._buffer_lock:
                for _ in range(min(len(batch), len(self._buffer))):
                    self._buffer.popleft()
        finally:
            self._buffer_drain.release()
        logger.warning("TrackLayer committed %d buffered conversions to the outbox", len(batch))

    def _retry_buffer(self) -> None:
        """Where no sender thread runs here (worker/celery delivery, or after close)."""
        # Still unwritable: the conversions stay in memory (logged when they were buffered).
        with contextlib.suppress(OutboxError):
            self._commit_buffer()

    # ------------------------------------------------------------------ delivery control
    def _start_if_backlog(self) -> None:
        if not self.sends_here:
            return
        try:
            due = self.outbox.next_due(time.time())
        except OutboxError as exc:
            logger.error("TrackLayer cannot read its outbox at start: %s", exc)
            return
        if due is not None:
            self.sender.wake()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing in the outbox (from any process) is pending, in flight or retrying.

        Starts the sender when this process sends. Waits through backoffs and 429 pauses
        that end within ``timeout``; auth-``paused`` rows do not hold it. Returns True when
        drained, False on timeout (an unusable outbox is logged and waited on, not raised).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.sends_here:
            self.sender.wake()
        complained = False
        while True:
            if not self.sends_here:
                self._retry_buffer()
            # Memory before the outbox: a conversion leaves the buffer or a hand-off only
            # after its commit, so read in this order it is seen in one place or the other.
            with self._buffer_lock:
                busy = len(self._buffer) + self._handoffs + len(self._owed)
            try:
                count, due = self.outbox.unfinished(time.time())
            except OutboxError as exc:  # maybe passing (locked, disk being fixed): keep trying
                if not complained:
                    logger.error("TrackLayer flush cannot read the outbox: %s", exc)
                    complained = True
                count, due = 1, None
            if count == 0 and busy == 0:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and (
                remaining <= 0 or (due is not None and due - time.time() > remaining)
            ):
                return False
            wait = FLUSH_POLL_SECONDS if remaining is None else min(remaining, FLUSH_POLL_SECONDS)
            with self.sender.progress:
                self.sender.progress.wait(wait)

    def run_worker(self, *, once: bool = False, stop: threading.Event | None = None) -> None:
        """Deliver in the foreground (``tracklayer worker``) until ``stop`` is set.

        With ``once``, returns when nothing is due right now. Stopping finishes the batch in
        flight and leaves every other row in the outbox.
        """
        self.sender.run(once=once, stop=stop or threading.Event())

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout`` (default ``shutdown_timeout``),
        then stop the sender; whatever is left stays durable in the outbox."""
        if self._closed:
            return
        self._closed = True
        budget = self.settings.shutdown_timeout if timeout is None else timeout
        started = time.monotonic()
        if self.sends_here and self.sender.is_alive():
            self.flush(budget)
        self.sender.stop(max(0.0, budget - (time.monotonic() - started)))
        self._retry_buffer()
        with self._buffer_lock:
            lost = len(self._buffer)
        if lost:
            logger.error(
                "TrackLayer closed with %d conversions it could never write to the outbox", lost
            )
        self.outbox.close()
        _engines.discard(self)

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """Counts by state and by event, oldest waiting age, pauses, last errors."""
        with self._buffer_lock:
            buffered = len(self._buffer)
        return build_stats(self.outbox, now=time.time(), buffered=buffered, dry_run=self.dry_run)

    def trace(self, conversion_id: str) -> Trace | None:
        """The whole life of a conversion id (its most recent row), or None if unknown."""
        rows = self.outbox.rows(conversion_id)
        if not rows:
            return None
        row = rows[-1]
        attempts = [
            a for a in self.outbox.attempts(conversion_id)
            if a.event == row.event and a.pixel_id == row.pixel_id
        ]
        return Trace.from_outbox(row, attempts)

    # ------------------------------------------------------------------ collaborators
    def _make_client(self) -> Client:
        from .delivery.client import XConversionsClient

        return XConversionsClient(self.settings)

    def _make_bucket(self) -> Bucket:
        from .delivery.ratelimit import TokenBucket

        return TokenBucket.per_15min(self.settings.rate_limit_per_15min)


def _reinit_after_fork() -> None:
    for engine in list(_engines):
        engine._buffer_lock = threading.Lock()
        engine._buffer_drain = threading.Lock()
        engine._handoffs = 0  # those hand-offs run in the parent's threads
        engine._owed = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


@atexit.register
def _close_engines() -> None:
    for engine in list(_engines):
        try:
            engine.close()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            logger.exception("TrackLayer could not close %r at exit", engine)
