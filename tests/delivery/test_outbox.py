"""The outbox contract, run against both backends (real SQLite file and memory)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tracklayer_middleware.conversion import Conversion
from tracklayer_middleware.delivery.log import DeliveryLogEntry
from tracklayer_middleware.delivery.outbox import (
    PAUSE_AUTH,
    PAUSE_RATE_LIMIT,
    PixelPause,
    RowUpdate,
    State,
)
from tracklayer_middleware.delivery.sqlite_outbox import SCHEMA_VERSION, SQLiteOutbox
from tracklayer_middleware.errors import OutboxError

T0 = 1_800_000_000.0
LEASE = 30.0

Make = Callable[..., Conversion]


def _entry(row_conversion_id: str, state: str, **kw: object) -> DeliveryLogEntry:
    return DeliveryLogEntry(
        conversion_id=row_conversion_id, event="purchase", pixel_id="o1a2b", attempt=1,
        state=state, started_at=T0, finished_at=T0 + 0.1, **kw,  # type: ignore[arg-type]
    )


def test_enqueue_is_idempotent_per_pixel_event_and_conversion_id(outbox, conversion: Make):
    assert outbox.enqueue([conversion(1), conversion(2)], now=T0) == [True, True]
    assert outbox.enqueue([conversion(1), conversion(3)], now=T0) == [False, True]
    # The same conversion id for another event is another action.
    assert outbox.enqueue([conversion(1, event="lead")], now=T0) == [True]
    assert outbox.counts() == {"purchase": {"pending": 3}, "lead": {"pending": 1}}


def test_rows_hold_hashes_not_raw_identifiers(outbox, conversion: Make):
    outbox.enqueue([conversion(1, email="Someone@Example.com")], now=T0)
    (row,) = outbox.rows("ord_1")
    assert "someone" not in str(row.record).lower()
    assert row.record["hashed_email"] and len(row.record["hashed_email"]) == 64


def test_claim_leases_rows_once_until_the_lease_expires(outbox, conversion: Make):
    outbox.enqueue([conversion(i) for i in range(5)], now=T0)
    owner, rows = outbox.claim(3, lease_seconds=LEASE, now=T0)
    assert len(rows) == 3
    _, more = outbox.claim(10, lease_seconds=LEASE, now=T0 + 1)
    assert len(more) == 2
    assert outbox.claim(10, lease_seconds=LEASE, now=T0 + 2)[1] == []
    # The first sender died: its rows come back after the lease, to a new owner.
    owner2, again = outbox.claim(10, lease_seconds=LEASE, now=T0 + LEASE + 0.5)
    assert {r.id for r in again} == {r.id for r in rows}
    # The dead sender's late result is not applied over the new owner's lease.
    stale = [RowUpdate(r.id, owner, State.SENT, attempts=1) for r in rows]
    assert outbox.finish(stale, [], now=T0 + LEASE + 1) == 0
    fresh = [RowUpdate(r.id, owner2, State.SENT, attempts=1) for r in again]
    assert outbox.finish(fresh, [], now=T0 + LEASE + 1) == 3


def test_renew_keeps_rows_claimed(outbox, conversion: Make):
    outbox.enqueue([conversion(1)], now=T0)
    owner, rows = outbox.claim(1, lease_seconds=LEASE, now=T0)
    outbox.renew(owner, [rows[0].id], until=T0 + 3 * LEASE)
    assert outbox.claim(1, lease_seconds=LEASE, now=T0 + 2 * LEASE)[1] == []


def test_finish_records_state_and_attempt_log(outbox, conversion: Make):
    outbox.enqueue([conversion(1)], now=T0)
    owner, (row,) = outbox.claim(1, lease_seconds=LEASE, now=T0)
    update = RowUpdate(
        row.id, owner, State.RETRYING, attempts=1, first_attempt_at=T0,
        next_attempt_at=T0 + 10, status=503, code="SERVICE_UNAVAILABLE", error="try later",
    )
    entry = _entry("ord_1", State.RETRYING, http_status=503, identifiers=("hashed_email",))
    assert outbox.finish([update], [entry], now=T0) == 1
    (stored,) = outbox.rows("ord_1")
    assert (stored.state, stored.attempts, stored.last_status) == ("retrying", 1, 503)
    assert outbox.attempts("ord_1") == [entry]
    assert outbox.last_errors()["o1a2b"] == entry
    # Not due before its backoff ends.
    assert outbox.claim(1, lease_seconds=LEASE, now=T0 + 5)[1] == []
    assert outbox.next_due(T0 + 5) == T0 + 10
    assert len(outbox.claim(1, lease_seconds=LEASE, now=T0 + 10)[1]) == 1


def test_skipped_rows_are_never_claimed_nor_waited_for(outbox, conversion: Make):
    skipped = conversion(1, email=None)
    assert skipped.initial_state == State.SKIPPED_NO_IDENTIFIER
    outbox.enqueue([skipped], now=T0)
    assert outbox.claim(10, lease_seconds=LEASE, now=T0)[1] == []
    assert outbox.unfinished(T0) == (0, None)
    assert outbox.counts() == {"purchase": {"skipped_no_identifier": 1}}


def test_auth_pause_parks_rows_and_probes_with_one_batch(outbox, conversion: Make):
    outbox.enqueue([conversion(i) for i in range(4)], now=T0)
    outbox.pause(PixelPause("o1a2b", PAUSE_AUTH, "401 AUTH_FAILED", until=T0 + 5, since=T0,
                            status=401, code="AUTH_FAILED"), now=T0)
    outbox.enqueue([conversion(9)], now=T0 + 1)
    assert outbox.counts()["purchase"] == {"paused": 5}
    assert outbox.unfinished(T0 + 1) == (0, None)  # paused rows do not hold flush()
    assert outbox.claim(10, lease_seconds=LEASE, now=T0 + 1)[1] == []
    assert outbox.next_due(T0 + 1) == T0 + 5
    _, probe = outbox.claim(2, lease_seconds=LEASE, now=T0 + 5)
    assert len(probe) == 2
    # While the probe is out nobody else probes.
    assert outbox.claim(10, lease_seconds=LEASE, now=T0 + 6)[1] == []
    assert outbox.pauses()["o1a2b"].active(T0 + 6)
    assert outbox.resume("o1a2b", now=T0 + 7) == 3
    assert outbox.pauses() == {}
    assert len(outbox.claim(10, lease_seconds=LEASE, now=T0 + 7)[1]) == 3


def test_rate_limit_pause_holds_the_pixel_until_it_ends(outbox, conversion: Make):
    outbox.enqueue([conversion(1), conversion(2)], now=T0)
    outbox.pause(PixelPause("o1a2b", PAUSE_RATE_LIMIT, "429", until=T0 + 20, since=T0), now=T0)
    assert outbox.counts()["purchase"] == {"pending": 2}  # not parked: flush() waits for them
    assert outbox.claim(10, lease_seconds=LEASE, now=T0 + 1)[1] == []
    assert outbox.unfinished(T0 + 1) == (2, T0 + 20)
    assert outbox.next_due(T0 + 1) == T0 + 20
    assert len(outbox.claim(10, lease_seconds=LEASE, now=T0 + 20)[1]) == 2
    assert not outbox.pauses()["o1a2b"].active(T0 + 21)


def test_retry_dead_and_purge(outbox, conversion: Make):
    outbox.enqueue([conversion(1), conversion(2), conversion(3)], now=T0)
    owner, rows = outbox.claim(3, lease_seconds=LEASE, now=T0)
    states = {"ord_1": State.SENT, "ord_2": State.DEAD, "ord_3": State.SENT}
    outbox.finish(
        [RowUpdate(r.id, owner, states[r.conversion_id], attempts=12, first_attempt_at=T0)
         for r in rows],
        [_entry(cid, s) for cid, s in states.items()],
        now=T0,
    )
    assert outbox.retry_dead(now=T0 + 1, conversion_ids=["ord_3"]) == 0
    assert outbox.retry_dead(now=T0 + 1, event="purchase") == 1
    (revived,) = outbox.rows("ord_2")
    assert (revived.state, revived.attempts, revived.first_attempt_at) == ("pending", 0, None)
    assert outbox.purge(done_before=T0 + 100) == 2
    assert outbox.rows("ord_1") == [] and outbox.attempts("ord_1") == []
    assert outbox.attempts("ord_2") != []  # not purged: still in play
    assert outbox.oldest_unfinished() == T0


def test_sqlite_file_survives_reopen_and_records_schema_version(tmp_path: Path, conversion: Make):
    path = tmp_path / "nested" / "outbox.sqlite3"
    box = SQLiteOutbox(path)
    box.enqueue([conversion(1)], now=T0)
    box.close()
    reopened = SQLiteOutbox(path)
    assert [r.conversion_id for r in reopened.rows("ord_1")] == ["ord_1"]
    reopened.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_newer_schema_is_refused_clearly(tmp_path: Path):
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(OutboxError, match="newer than this TrackLayer"):
        SQLiteOutbox(path).counts()


def test_a_file_that_is_not_sqlite_is_a_clear_outbox_error(tmp_path: Path):
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(OutboxError, match="not a readable SQLite outbox"):
        SQLiteOutbox(path).counts()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_is_a_clear_outbox_error(tmp_path: Path, conversion: Make):
    path = tmp_path / "outbox.sqlite3"
    box = SQLiteOutbox(path)
    box.enqueue([conversion(1)], now=T0)
    box.close()
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutboxError, match=r"outbox .* (read-only|cannot be opened)"):
            SQLiteOutbox(path).enqueue([conversion(2)], now=T0)
    finally:
        tmp_path.chmod(0o755)


def test_open_outbox_picks_the_backend_from_the_setting(tmp_path: Path, monkeypatch, settings):
    from tracklayer_middleware.delivery import outbox as outbox_module
    from tracklayer_middleware.delivery.memory_outbox import MemoryOutbox
    from tracklayer_middleware.errors import ConfigurationError

    assert isinstance(outbox_module.open_outbox(settings.replace(outbox="memory")), MemoryOutbox)
    monkeypatch.chdir(tmp_path)
    relative = outbox_module.open_outbox(settings.replace(outbox="sqlite:///state/o.sqlite3"))
    assert relative.counts() == {}  # first use creates the directory and the file
    assert (tmp_path / "state" / "o.sqlite3").is_file()
    relative.close()
    monkeypatch.delitem(outbox_module._factories, "django", raising=False)
    with pytest.raises(ConfigurationError, match="INSTALLED_APPS"):
        outbox_module.open_outbox(settings.replace(outbox="django"))
    mine = MemoryOutbox()
    monkeypatch.setitem(outbox_module._factories, "django", lambda s: mine)
    assert outbox_module.open_outbox(settings.replace(outbox="django")) is mine
