"""The sender's own rules: batching by pixel, bisecting, leases, stopping, dry run, retention,
and a delivery log that never holds a secret or an identifier value."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.delivery.client import XConversionsClient
from tracklayer_middleware.delivery.memory_outbox import MemoryOutbox
from tracklayer_middleware.delivery.outbox import OutboxRow, RowUpdate, State
from tracklayer_middleware.delivery.ratelimit import TokenBucket
from tracklayer_middleware.delivery.sender import Sender, probe_delay
from tracklayer_middleware.delivery.sqlite_outbox import SQLiteOutbox
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing import FakeXConversionsAPI

T0 = time.time() - 3600  # rows enqueued an hour ago: due now


class RecordingOutbox(MemoryOutbox):
    """The memory outbox, also noting every lease renewal (a real outbox, observed)."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals: list[set[int]] = []

    def renew(self, lease_owner: str, row_ids: Sequence[int], *, until: float) -> None:
        self.renewals.append(set(row_ids))
        super().renew(lease_owner, row_ids, until=until)


def _settings(base_config: dict[str, Any], fake_x: FakeXConversionsAPI, **kw: Any):
    values = {"environment": "production", "api_base_url": fake_x.base_url, **kw}
    return TrackLayerSettings.from_mapping(base_config, **values)


def _sender(settings: TrackLayerSettings, outbox: SQLiteOutbox, **kw: Any) -> Sender:
    return Sender(
        settings, outbox, lambda: XConversionsClient(settings),
        lambda: TokenBucket(1_000_000), **kw,
    )


def _conversions(settings: TrackLayerSettings, n: int, prefix: str = "ord") -> list[Conversion]:
    return [
        build_conversion(settings, "purchase", conversion_id=f"{prefix}_{i}",
                         email=f"{prefix}{i}@example.com")
        for i in range(n)
    ]


def _spoil(conversion: Conversion) -> Conversion:
    return dataclasses.replace(conversion, hashed_email="0" * 63 + "Z")


def test_claimed_rows_go_out_per_pixel_in_batches_of_at_most_batch_size(base_config, fake_x):
    fake = FakeXConversionsAPI(pixel_ids=["o1a2b", "o9z9z"], token=None).start()
    try:
        settings = _settings(base_config, fake, batch_size=3)
        other = settings.replace(pixel_id="o9z9z")
        outbox = MemoryOutbox()
        outbox.enqueue(_conversions(settings, 5) + _conversions(other, 2, "other"), now=T0)
        _sender(settings, outbox).run(once=True)
        for request in fake.requests:
            ids = [c["conversion_id"] for c in request.conversions()]
            prefix = "other_" if request.pixel_id == "o9z9z" else "ord_"
            assert 1 <= len(ids) <= 3 and all(i.startswith(prefix) for i in ids)
        assert len(fake.accepted_ids()) == 7
        assert outbox.counts() == {"purchase": {"sent": 7}}
    finally:
        fake.stop()


def test_bisecting_isolates_every_bad_conversion(base_config, fake_x):
    settings = _settings(base_config, fake_x)
    outbox = RecordingOutbox()
    batch = _conversions(settings, 8)
    batch[2], batch[5] = _spoil(batch[2]), _spoil(batch[5])
    outbox.enqueue(batch, now=T0)
    _sender(settings, outbox).run(once=True)
    assert set(fake_x.accepted_ids()) == {f"ord_{i}" for i in (0, 1, 3, 4, 6, 7)}
    assert outbox.counts() == {"purchase": {"sent": 6, "dead": 2}}
    (dead,) = outbox.rows("ord_5")
    assert dead.last_code == "INVALID_PARAMETER" and "hashed_email" in str(dead.last_error)
    # Every POST (each bisect step too) was preceded by a renewal of its rows' lease.
    assert len(outbox.renewals) == len(fake_x.requests)
    ids = {r.conversion_id: r.id for cid in (f"ord_{i}" for i in range(8))
           for r in outbox.rows(cid)}
    for renewed, request in zip(outbox.renewals, fake_x.requests, strict=True):
        assert {ids[c["conversion_id"]] for c in request.conversions()} <= renewed


def test_stopping_hands_claimed_rows_back_at_once(base_config, fake_x):
    settings = _settings(base_config, fake_x)
    outbox = MemoryOutbox()
    outbox.enqueue(_conversions(settings, 4), now=T0)
    stop = threading.Event()
    stop.set()
    assert _sender(settings, outbox).cycle(stop) == 4
    assert fake_x.requests == []
    assert outbox.counts() == {"purchase": {"pending": 4}}  # not stuck in_flight for a lease


def test_a_stopped_bucket_wait_hands_the_batch_back(base_config, fake_x):
    class SignallingBucket(TokenBucket):
        waiting = threading.Event()

        def acquire(self, tokens: int = 1, timeout: float | None = None, *,
                    stop: threading.Event | None = None) -> bool:
            self.waiting.set()
            return super().acquire(tokens, timeout, stop=stop)

    settings = _settings(base_config, fake_x)
    outbox = MemoryOutbox()
    outbox.enqueue(_conversions(settings, 2), now=T0)
    empty = SignallingBucket(1, burst=1)
    assert empty.try_acquire(1)  # the next token is 15 minutes away
    stop = threading.Event()
    sender = Sender(settings, outbox, lambda: XConversionsClient(settings), lambda: empty)
    worker = threading.Thread(target=sender.run, kwargs={"stop": stop})
    worker.start()
    assert empty.waiting.wait(10)
    assert outbox.counts() == {"purchase": {"in_flight": 2}}
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert fake_x.requests == []
    assert outbox.counts() == {"purchase": {"pending": 2}}


def test_dry_run_builds_payloads_but_never_builds_a_client(base_config, fake_x):
    settings = _settings(base_config, fake_x, environment="staging")

    def no_client() -> XConversionsClient:
        raise AssertionError("dry run must not create an X client")

    outbox = MemoryOutbox()
    outbox.enqueue(_conversions(settings, 3), now=T0)
    Sender(settings, outbox, no_client, lambda: TokenBucket(1)).run(once=True)
    assert outbox.counts() == {"purchase": {"dry_run": 3}}
    assert [e.state for e in outbox.attempts("ord_0")] == ["dry_run"]


def test_finished_rows_are_pruned_after_retention(base_config, fake_x):
    settings = _settings(base_config, fake_x, retention_days=30)
    outbox = MemoryOutbox()
    outbox.enqueue(_conversions(settings, 2), now=T0)
    owner, (sent, dead) = outbox.claim(2, lease_seconds=10, now=T0)
    outbox.finish([RowUpdate(sent.id, owner, State.SENT, attempts=1),
                   RowUpdate(dead.id, owner, State.DEAD, attempts=1)], [], now=T0)
    _sender(settings, outbox, clock=lambda: T0 + 29 * 86400).run(once=True)
    assert outbox.counts() == {"purchase": {"sent": 1, "dead": 1}}
    _sender(settings, outbox, clock=lambda: T0 + 31 * 86400).run(once=True)
    assert outbox.counts() == {"purchase": {"dead": 1}}  # dead rows wait for an operator


def test_probe_delay_follows_the_policy_ladder_within_the_retry_cap(base_config):
    production = TrackLayerSettings.from_mapping(base_config, retry_max_seconds=300)
    assert [probe_delay(n, production) for n in range(6)] == [60, 120, 240, 480, 900, 900]
    impatient = TrackLayerSettings.from_mapping(base_config, retry_base_seconds=0.01,
                                                retry_max_seconds=0.1)
    assert probe_delay(0, impatient) == 0.1 and probe_delay(5, impatient) == pytest.approx(0.3)


def test_the_delivery_log_never_holds_a_token_or_identifier_value(
    base_config, fake_x, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    tl = TrackLayer(base_config, environment="production", api_base_url=fake_x.base_url,
                    outbox=f"sqlite:///{tmp_path}/o.sqlite3")
    try:
        fake_x.script(503, 401)
        good = tl.convert("purchase", conversion_id="ord_1", email="Private.Person@example.com",
                          phone="+1 415 555 0100", attribution="29q0w6g2k2m4a",
                          ip_address="203.0.113.9", user_agent="Mozilla/5.0 Secret")
        bad = _spoil(build_conversion(tl.settings, "purchase", conversion_id="ord_2",
                                      email="other@example.com"))
        tl.handoff([bad])
        assert fake_x.wait_for(1, timeout=20)
        assert tl.flush(20)
    finally:
        tl.close()
    secrets = [
        "test-token-not-a-secret", "Private.Person", "private.person", "415 555",
        "+14155550100", good.hashed_email, good.hashed_phone, "203.0.113.9",
        "Mozilla/5.0 Secret", bad.hashed_email, "29q0w6g2k2m4a",
    ]
    delivery = [r for r in caplog.records if r.name.startswith("tracklayer")]
    assert any(getattr(r, "state", None) == "sent" for r in delivery)
    for record in delivery:
        text = record.getMessage() + repr(vars(record))
        leaked = [s for s in secrets if s and s in text]
        assert leaked == [], (record.getMessage(), leaked)
    sent = next(r for r in delivery if getattr(r, "state", None) == "sent")
    assert sorted(sent.identifiers) == sorted(  # names only
        ["twclid", "hashed_email", "hashed_phone", "ip_address", "user_agent"]
    )


def test_row_shape_is_what_trace_needs(base_config, fake_x):
    settings = _settings(base_config, fake_x)
    outbox = MemoryOutbox()
    outbox.enqueue(_conversions(settings, 1), now=T0)
    (row,) = outbox.rows("ord_0")
    assert isinstance(row, OutboxRow) and row.state == State.PENDING
    assert Conversion.from_record(row.record).conversion_id == "ord_0"


def test_an_unreadable_stored_row_goes_dead_without_blocking_the_others(
    base_config, fake_x, tmp_path
):
    settings = _settings(base_config, fake_x)
    outbox = SQLiteOutbox(tmp_path / "o.sqlite3")
    outbox.enqueue(_conversions(settings, 3), now=T0)
    with sqlite3.connect(tmp_path / "o.sqlite3") as conn:  # e.g. written by a future version
        conn.execute("UPDATE outbox SET record = '{\"v\": 99}' WHERE conversion_id = 'ord_1'")
    _sender(settings, outbox).run(once=True)
    assert set(fake_x.accepted_ids()) == {"ord_0", "ord_2"}
    (row,) = outbox.rows("ord_1")
    assert row.state == State.DEAD and row.last_code == "UNREADABLE_RECORD"
    assert "record version 99" in str(row.last_error)
    outbox.close()


@pytest.mark.parametrize(
    "damage",
    [
        "json_set(record, '$.identifiers', json('[{\"x\": 1}]'))",  # names must be text
        "json_set(record, '$.event_id', 7)",
        "json_remove(record, '$.conversion_time')",
    ],
)
def test_a_damaged_stored_row_goes_dead_without_blocking_the_others(
    base_config, fake_x, tmp_path, damage
):
    settings = _settings(base_config, fake_x)
    outbox = SQLiteOutbox(tmp_path / "o.sqlite3")
    outbox.enqueue(_conversions(settings, 3), now=T0)
    with sqlite3.connect(tmp_path / "o.sqlite3") as conn:
        conn.execute(f"UPDATE outbox SET record = {damage} WHERE conversion_id = 'ord_1'")
    _sender(settings, outbox).run(once=True)
    assert set(fake_x.accepted_ids()) == {"ord_0", "ord_2"}
    (row,) = outbox.rows("ord_1")
    assert row.state == State.DEAD and row.last_code == "UNREADABLE_RECORD"
    outbox.close()


def test_the_lease_is_renewed_while_a_slow_post_is_in_flight(base_config, fake_x):
    settings = _settings(base_config, fake_x, timeout_seconds=2.0, lease_seconds=2.1)
    outbox = RecordingOutbox()
    outbox.enqueue(_conversions(settings, 2), now=T0)
    fake_x.delay = 1.5  # answered within the timeout, but past a third of the lease
    _sender(settings, outbox).run(once=True)
    assert len(fake_x.requests) == 1
    assert len(outbox.renewals) >= 2  # before the POST, and at least once during it
    assert outbox.counts() == {"purchase": {"sent": 2}}
