"""``TrackLayer`` as an application sees it: convert, hand off, flush, stats, trace, close."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tracklayer_middleware.consent import Consent
from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.delivery.memory_outbox import MemoryOutbox
from tracklayer_middleware.delivery.outbox import State
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.errors import ConversionError, OutboxError
from tracklayer_middleware.testing import FakeXConversionsAPI
from tracklayer_middleware.tracker import Tracker


@pytest.fixture
def make_engine(base_config, fake_x: FakeXConversionsAPI, tmp_path: Path):
    """``make_engine(**overrides)``: a sending engine on a SQLite file, closed at the end."""
    engines: list[TrackLayer] = []

    def make(**overrides: object) -> TrackLayer:
        values = {"environment": "production", "api_base_url": fake_x.base_url,
                  "outbox": f"sqlite:///{tmp_path}/outbox.sqlite3", **overrides}
        engines.append(TrackLayer(base_config, **values))
        return engines[-1]

    yield make
    for tl in engines:
        tl.close(timeout=0)


@pytest.fixture
def engine(make_engine) -> TrackLayer:
    return make_engine()


def test_settings_come_from_a_mapping_with_overrides(base_config):
    tl = TrackLayer(base_config, outbox="memory")
    try:
        assert tl.settings.pixel_id == "o1a2b" and tl.settings.outbox == "memory"
        assert tl.dry_run  # development by default: never sends
        assert "o1a2b" in repr(tl) and "secret" not in repr(tl)
        assert isinstance(tl.tracker(), Tracker)
    finally:
        tl.close()


def test_convert_commits_and_the_sender_delivers(engine: TrackLayer, fake_x):
    conversion = engine.convert("purchase", conversion_id="ord_1", value=129.95,
                                currency="USD", email="buyer@example.com")
    assert engine.outbox.rows("ord_1")[0].conversion_id == conversion.conversion_id
    assert engine.flush(10)
    assert fake_x.accepted_ids() == {"ord_1": 1}
    assert engine.stats()["by_state"]["sent"] == 1


def test_bad_input_raises_before_anything_is_queued(engine: TrackLayer):
    with pytest.raises(ConversionError):
        engine.convert("purchase", conversion_id="ord_1", value=-1, email="a@example.com")
    assert engine.stats()["by_event"] == {}


def test_repeated_convert_is_a_logged_no_op(engine: TrackLayer, fake_x, caplog):
    caplog.set_level(logging.INFO, logger="tracklayer")
    for _ in range(3):
        engine.convert("purchase", conversion_id="ord_1", email="a@example.com")
    assert engine.flush(10)
    assert fake_x.accepted_ids() == {"ord_1": 1}
    assert sum("already queued" in r.getMessage() for r in caplog.records) == 2


def test_dry_run_builds_and_logs_everything_but_never_calls_x(make_engine, fake_x, caplog):
    caplog.set_level(logging.INFO, logger="tracklayer")
    tl = make_engine(environment="staging")
    assert any("runs DRY" in r.getMessage() for r in caplog.records)
    tl.convert("purchase", conversion_id="ord_1", email="a@example.com")
    assert tl.flush(10)
    assert fake_x.requests == []
    assert tl.stats()["by_state"][State.DRY_RUN] == 1
    (record,) = [r for r in caplog.records if r.name == "tracklayer.delivery"]
    assert record.state == "dry_run" and record.identifiers == ["hashed_email"]
    assert "dry run" in str(tl.trace("ord_1"))


def test_consent_denied_is_recorded_and_never_sent(engine: TrackLayer, fake_x):
    engine.convert("purchase", conversion_id="ord_1", email="a@example.com",
                   consent=Consent(ad_storage=True, ad_user_data=False))
    engine.convert("purchase", conversion_id="ord_2", email="b@example.com")
    assert engine.flush(10)
    assert fake_x.accepted_ids() == {"ord_2": 1}
    trace = engine.trace("ord_1")
    assert trace is not None and trace.state == State.SKIPPED_CONSENT
    assert [a.state for a in trace.attempts] == [State.SKIPPED_CONSENT]


def test_disabled_engine_validates_but_queues_nothing(make_engine):
    tl = make_engine(enabled=False)
    with pytest.raises(ConversionError):
        tl.convert("nope", conversion_id="x", email="a@example.com")
    tl.convert("purchase", conversion_id="ord_1", email="a@example.com")
    assert tl.stats()["by_event"] == {}


def test_handoff_never_raises_and_buffers_until_the_outbox_works(
    make_engine, fake_x, tmp_path, caplog
):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the outbox directory should be")
    tl = make_engine(outbox=f"sqlite:///{blocker}/outbox.sqlite3")
    conversions = [
        build_conversion(tl.settings, "purchase", conversion_id=f"ord_{i}",
                         email=f"u{i}@example.com")
        for i in range(3)
    ]
    tl.handoff(conversions)  # must not raise: the response was already served
    assert any(
        r.levelno == logging.ERROR and "could not write 3 conversions" in r.getMessage()
        for r in caplog.records
    )
    with pytest.raises(OutboxError, match="cannot create the outbox directory"):
        tl.convert("purchase", conversion_id="ord_9", email="z@example.com")
    assert not tl.flush(0.2)
    blocker.unlink()  # the operator fixes the disk
    assert tl.flush(10)
    assert fake_x.accepted_ids() == {"ord_0": 1, "ord_1": 1, "ord_2": 1}


def test_worker_mode_retries_its_buffer_without_a_sender_thread(make_engine, fake_x, tmp_path):
    """delivery="worker": no sender thread in the web process, yet an outage loses nothing."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where the outbox directory should be")
    box = f"sqlite:///{blocker}/outbox.sqlite3"
    web = make_engine(outbox=box, delivery="worker")

    def convert(i: int) -> list[Conversion]:
        return [build_conversion(web.settings, "purchase", conversion_id=f"ord_{i}",
                                 email=f"u{i}@example.com")]

    web.handoff(convert(0))  # the disk is broken: kept in memory
    blocker.unlink()  # the operator fixes the disk
    web.handoff(convert(1))  # the next hand-off commits the earlier one too
    assert web.stats()["buffered_in_memory"] == 0
    web.handoff(convert(2))
    web.close(timeout=0)
    worker = make_engine(outbox=box, delivery="worker")
    worker.run_worker(once=True)
    assert fake_x.accepted_ids() == {"ord_0": 1, "ord_1": 1, "ord_2": 1}


def test_close_commits_what_an_outage_left_in_memory(make_engine, fake_x, tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the outbox directory should be")
    box = f"sqlite:///{blocker}/outbox.sqlite3"
    web = make_engine(outbox=box, delivery="worker")
    web.handoff([build_conversion(web.settings, "lead", conversion_id="lead_1",
                                  email="a@example.com")])
    blocker.unlink()
    web.close(timeout=0)  # no later hand-off came: closing still writes it down
    worker = make_engine(outbox=box, delivery="worker")
    worker.run_worker(once=True)
    assert fake_x.accepted_ids() == {"lead_1": 1}


def test_flush_never_misses_a_conversion_moving_from_memory_to_the_outbox(base_config):
    """The sender commits the outage buffer while flush() reads the outbox: the conversion
    was in neither place flush() looked if it read the outbox first (seen under CI load)."""

    class HealingOutbox(MemoryOutbox):
        broken = True
        engine: TrackLayer | None = None

        def enqueue(self, conversions, *, now):
            if self.broken:
                raise OutboxError("disk full (test)")
            return super().enqueue(conversions, now=now)

        def unfinished(self, now):
            seen = super().unfinished(now)
            if self.broken:  # the sender's commit lands between the two reads of flush()
                self.broken = False
                assert self.engine is not None
                self.engine._commit_buffer()
            return seen

    box = HealingOutbox()
    tl = TrackLayer(base_config, outbox=box, delivery="worker")
    box.engine = tl
    try:
        tl.handoff([build_conversion(tl.settings, "purchase", conversion_id="ord_moving",
                                     email="m@example.com")])
        assert not tl.flush(0.3)  # nobody sends in worker mode: it must still be waiting
        assert [row.state for row in box.rows("ord_moving")] == [State.PENDING]
    finally:
        tl.close(timeout=0)


def test_stats_shape(engine: TrackLayer, fake_x):
    engine.convert("purchase", conversion_id="ord_1", email="a@example.com")
    engine.convert("lead", conversion_id="lead_1", email="a@example.com")
    assert engine.flush(10)
    stats = engine.stats()
    assert stats["by_state"]["sent"] == 2 and set(stats["by_state"]) == set(State.ALL)
    assert stats["by_event"] == {"purchase": {"sent": 1}, "lead": {"sent": 1}}
    assert stats["oldest_pending_age_seconds"] is None
    assert stats["paused"] == {} and stats["last_error"] == {}


def test_trace_tells_the_whole_story_without_identifier_values(engine: TrackLayer, fake_x):
    fake_x.fail_next(1, 503)
    engine.convert("purchase", conversion_id="ord_1", value=5, currency="EUR",
                   email="secret.person@example.com", attribution="29q0w6g2k2m4a")
    assert engine.flush(10)
    trace = engine.trace("ord_1")
    assert trace is not None
    assert trace.state == State.SENT
    assert [a.state for a in trace.attempts] == [State.RETRYING, State.SENT]
    assert trace.attempts[0].http_status == 503
    assert trace.identifiers == ("twclid", "hashed_email")
    text = str(trace)
    assert "HTTP 503" in text and "Accepted by X" in text and "5.0 EUR" in text
    digest = engine.outbox.rows("ord_1")[0].record["hashed_email"]
    assert digest not in text and "secret.person" not in text
    assert trace.conversion["hashed_email"] == f"{digest[:8]}…{digest[-4:]}"
    assert f"hashed_email {digest[:8]}…" in text
    assert engine.trace("unknown") is None


def test_a_new_engine_over_a_full_outbox_starts_sending_on_its_own(make_engine, fake_x):
    first = make_engine(delivery="worker")
    for i in range(20):
        first.convert("purchase", conversion_id=f"ord_{i}", email=f"u{i}@example.com")
    first.close()
    assert fake_x.requests == []  # worker mode: the web process only enqueues
    second = make_engine()
    assert fake_x.wait_for(20, timeout=10)  # no enqueue, no flush: it started by itself
    assert second.flush(10)
    assert fake_x.accepted_ids() == {f"ord_{i}": 1 for i in range(20)}


def test_worker_mode_run_worker_once_drains(make_engine, fake_x):
    tl = make_engine(delivery="worker")
    for i in range(3):
        tl.convert("purchase", conversion_id=f"ord_{i}", email=f"u{i}@example.com")
    assert not tl.sender.is_alive()
    tl.run_worker(once=True)
    assert fake_x.accepted_ids() == {"ord_0": 1, "ord_1": 1, "ord_2": 1}
    assert tl.flush(1)


def test_close_leaves_undeliverable_rows_durable(make_engine, fake_x):
    fake_x.fail_next(1000, 503)
    tl = make_engine(retry_base_seconds=5, retry_max_seconds=5)
    tl.convert("purchase", conversion_id="ord_1", email="a@example.com")
    assert fake_x.wait_for_requests(1)
    tl.close(timeout=0.5)
    reopened = make_engine(delivery="worker").outbox
    (row,) = reopened.rows("ord_1")
    assert row.state == State.RETRYING
    assert row.attempts == len(reopened.attempts("ord_1")) == len(fake_x.requests) >= 1
