"""Fault tests: whatever X, the network, the disk or the process does, every conversion is
accounted for — delivered (lost = 0) and recorded sent exactly once (doubled = 0).

Real HTTP to the fake X on 127.0.0.1, real SQLite files, real processes. No sleeps: waits
are on ``flush()``, the fake's recorded requests, or a condition with a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.delivery.outbox import State
from tracklayer_middleware.delivery.ratelimit import TokenBucket
from tracklayer_middleware.delivery.sqlite_outbox import SQLiteOutbox
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI
from tracklayer_middleware.tracker import current_tracker
from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.adversarial_fault


@pytest.fixture
def config(base_config: dict[str, Any], fake_x: FakeXConversionsAPI, tmp_path: Path):
    """Settings (as a mapping, so child processes can share them) for a sending engine."""
    return {
        **base_config,
        "environment": "production",
        "api_base_url": fake_x.base_url,
        "outbox": f"sqlite:///{tmp_path}/outbox.sqlite3",
    }


@pytest.fixture
def make_engine(config: dict[str, Any]):
    engines: list[TrackLayer] = []

    def make(**overrides: Any) -> TrackLayer:
        engines.append(TrackLayer({**config, **overrides}))
        return engines[-1]

    yield make
    for tl in engines:
        tl.close(timeout=0)


def convert_all(tl: TrackLayer, ids: Iterable[str]) -> list[str]:
    ids = list(ids)
    for cid in ids:
        tl.convert("purchase", conversion_id=cid, email=f"{cid}@example.com", value=1.5)
    return ids


def assert_accounted(tl: TrackLayer, fake_x: FakeXConversionsAPI, ids: list[str],
                     *, x_may_repeat: bool = False) -> None:
    """lost = 0 and doubled = 0, by conversion_id, in X's received set and in our records."""
    accepted = fake_x.accepted_ids()
    recorded_sent = Counter(
        e.conversion_id for cid in ids for e in tl.outbox.attempts(cid) if e.state == State.SENT
    )
    states = {cid: tl.outbox.rows(cid)[0].state for cid in ids}
    lost = [cid for cid in ids if not accepted[cid] or states[cid] != State.SENT]
    doubled = [cid for cid in ids if recorded_sent[cid] != 1]
    if not x_may_repeat:  # X dedups by conversion_id, but we must not lean on it needlessly
        doubled += [cid for cid in ids if accepted[cid] > 1]
    assert (lost, doubled) == ([], [])
    assert set(accepted) <= set(ids)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait for a condition another process brings about (nothing here can notify us)."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.02)
    return True


# ---------------------------------------------------------------------------- X misbehaves
def test_x_500_three_times_then_200(make_engine, fake_x):
    fake_x.fail_next(3, 500)
    tl = make_engine()
    ids = convert_all(tl, [f"ord_{i}" for i in range(10)])
    assert tl.flush(20)
    assert_accounted(tl, fake_x, ids)
    assert [r.status for r in fake_x.requests[:3]] == [500, 500, 500]


def test_timeouts_resend_with_the_same_conversion_id(make_engine, fake_x):
    # X processes each stalled request but answers after our timeout: we cannot know, so we
    # resend with the same conversion_id (X dedups) and record it sent once.
    fake_x.script(FakeResponse(delay=1.0), FakeResponse(delay=1.0))
    tl = make_engine(timeout_seconds=0.3, lease_seconds=1.0)
    ids = convert_all(tl, ["ord_1"])
    assert tl.flush(20)
    assert_accounted(tl, fake_x, ids, x_may_repeat=True)
    kinds = [e.error_code for e in tl.outbox.attempts("ord_1")]
    assert kinds[:2] == ["TIMEOUT", "TIMEOUT"] and kinds[-1] is None


def test_connection_refused_then_x_comes_back(config, fake_x):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = TrackLayer({**config, "api_base_url": dead_url})
    ids = convert_all(down, [f"ord_{i}" for i in range(5)])
    assert wait_until(lambda: down.stats()["by_state"][State.RETRYING] == 5)
    down.close(timeout=0)
    up = TrackLayer(config)  # same outbox file, X reachable again
    try:
        assert up.flush(20)
        assert_accounted(up, fake_x, ids)
        assert up.outbox.attempts("ord_0")[0].error_code == "CONNECTION"
    finally:
        up.close()


def test_429_waits_for_retry_after_without_using_an_attempt(make_engine, fake_x):
    fake_x.script(FakeResponse(429, headers={"Retry-After": "1"}))
    tl = make_engine()
    ids = convert_all(tl, ["ord_1", "ord_2"])
    assert tl.flush(20)  # waits through the pause: it ends within the timeout
    assert_accounted(tl, fake_x, ids)
    (row,) = tl.outbox.rows("ord_1")
    assert row.attempts == 1  # only the successful POST counted
    log = tl.outbox.attempts("ord_1")
    assert [(e.state, e.http_status) for e in log] == [("retrying", 429), ("sent", 200)]


def test_401_pauses_and_resumes_when_the_token_is_rotated(make_engine, fake_x, monkeypatch,
                                                          caplog):
    fake_x.set_token("rotated-token")
    tl = make_engine()
    ids = convert_all(tl, [f"ord_{i}" for i in range(5)])
    assert tl.flush(20)  # paused rows do not hold flush
    assert fake_x.accepted_ids() == {}
    stats = tl.stats()
    assert "AUTH_FAILED" in stats["paused"]["o1a2b"]
    assert stats["by_state"][State.PAUSED] == 5
    assert any(r.levelno == logging.ERROR and "rotate the token" in r.getMessage()
               for r in caplog.records)
    assert "Rotate the token" in str(tl.trace("ord_0"))
    more = convert_all(tl, ["ord_late"])  # converted while paused: kept, not dropped
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", "rotated-token")
    assert fake_x.wait_for(6, timeout=20)  # the probe succeeds and releases everything
    assert tl.flush(20)
    assert_accounted(tl, fake_x, ids + more)
    assert tl.stats()["paused"] == {}


@pytest.mark.parametrize(("status", "hint"), [(403, "ownership"), (404, "Events Manager")])
def test_403_and_404_pause_keep_and_recover(make_engine, fake_x, caplog, status, hint):
    fake_x.script(status)
    tl = make_engine()
    ids = convert_all(tl, ["ord_1"])
    assert fake_x.wait_for(1, timeout=20)
    assert tl.flush(20)
    assert_accounted(tl, fake_x, ids)
    log = tl.outbox.attempts("ord_1")
    assert [(e.state, e.http_status) for e in log] == [("paused", status), ("sent", 200)]
    assert any(r.levelno == logging.ERROR and hint in r.getMessage() for r in caplog.records)


def test_one_invalid_conversion_in_500(make_engine, fake_x):
    tl = make_engine(delivery="worker")
    good = [
        build_conversion(tl.settings, "purchase", conversion_id=f"ord_{i}",
                         email=f"u{i}@example.com")
        for i in range(500)
    ]
    # A digest X refuses (it slipped past our validation, e.g. from an old outbox row).
    bad = Conversion(**{**good[317].__dict__, "hashed_email": "not-a-sha256"})
    tl.handoff([*good[:317], bad, *good[318:]])
    tl.run_worker(once=True)
    ids = [c.conversion_id for c in good if c is not good[317]]
    assert_accounted(tl, fake_x, ids)
    dead = tl.trace("ord_317")
    assert dead is not None and dead.state == State.DEAD
    assert dead.last_code == "INVALID_PARAMETER"
    last = dead.attempts[-1]
    assert last.http_status == 400 and "hashed_email" in (last.error_message or "")
    assert "retry-dead" in str(dead)
    assert tl.stats()["by_state"]["sent"] == 499
    assert all(len(r.conversions()) <= 500 for r in fake_x.requests)


def test_10000_row_backlog_drains_in_batches_respecting_the_bucket(config, fake_x):
    class CountingBucket(TokenBucket):
        taken: list[int] = []

        def acquire(self, tokens: int = 1, timeout: float | None = None, *,
                    stop: threading.Event | None = None) -> bool:
            self.taken.append(tokens)
            return super().acquire(tokens, timeout, stop=stop)

    bucket = CountingBucket(9_000_000, burst=2_000)  # throttles after the first 2,000
    writer = TrackLayer({**config, "delivery": "worker"})
    conversions = [
        build_conversion(writer.settings, "purchase", conversion_id=f"ord_{i}",
                         email=f"u{i}@example.com")
        for i in range(10_000)
    ]
    writer.handoff(conversions)
    writer.close()
    tl = TrackLayer(config, bucket=bucket)
    try:
        assert tl.flush(60)
        assert_accounted(tl, fake_x, [c.conversion_id for c in conversions])
        sizes = [len(r.conversions()) for r in fake_x.requests]
        assert max(sizes) <= 500 and sum(sizes) == 10_000 and len(sizes) >= 20
        assert sorted(bucket.taken) == sorted(sizes)  # every POST paid the bucket first
    finally:
        tl.close()


# ---------------------------------------------------------------------------- processes die
CHILD = """
import json, sys
from tracklayer_middleware.conversion import build_conversion
from tracklayer_middleware.engine import TrackLayer
job = json.loads(sys.argv[1])
tl = TrackLayer(job["config"])
if job.get("one_handoff"):  # one request's worth: a single commit, a single claim
    tl.handoff([
        build_conversion(tl.settings, "purchase", conversion_id=cid, email=cid + "@x.example")
        for cid in job["ids"]
    ])
for cid in job["ids"]:
    tl.convert("purchase", conversion_id=cid, email=cid + "@example.com", value=1.5)
print("enqueued", flush=True)
drained = tl.flush(job.get("flush", 60)) if job.get("flush") != 0 else True
tl.close(timeout=job.get("close", 5))
sys.exit(0 if drained else 3)
"""


def spawn(config: dict[str, Any], ids: list[str], **job: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps({"config": config, "ids": ids, **job})],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )


def test_sender_killed_mid_send_is_delivered_after_the_lease(config, fake_x):
    config = {**config, "timeout_seconds": 2.0, "lease_seconds": 2.5}
    fake_x.delay = 3.0  # the child's POST hangs: it is killed in the middle of it
    ids = [f"ord_{i}" for i in range(50)]
    child = spawn(config, ids, one_handoff=True)
    box = SQLiteOutbox(Path(config["outbox"].removeprefix("sqlite:///")))
    assert wait_until(lambda: box.counts().get("purchase", {}).get(State.IN_FLIGHT) == 50)
    child.send_signal(signal.SIGKILL)
    child.wait()
    box.close()
    fake_x.delay = None
    tl = TrackLayer(config)  # a new process's engine: picks the rows up once the lease ends
    try:
        assert tl.flush(30)
        assert_accounted(tl, fake_x, ids, x_may_repeat=True)
        assert max(fake_x.received_ids().values()) <= 2
    finally:
        tl.close()


def test_enqueued_then_killed_before_sending_restarts_with_a_full_outbox(config, fake_x):
    ids = [f"ord_{i}" for i in range(300)]
    child = spawn({**config, "delivery": "worker"}, ids, flush=0)
    assert child.stdout is not None and child.stdout.readline().strip() == "enqueued"
    child.send_signal(signal.SIGKILL)  # committed rows survive a SIGKILL
    child.wait()
    tl = TrackLayer(config)
    try:
        assert fake_x.wait_for(300, timeout=30)  # it starts on its own
        assert tl.flush(30)
        assert_accounted(tl, fake_x, ids)
    finally:
        tl.close()


def test_four_processes_enqueueing_and_sending_on_one_file(config, fake_x):
    config = {**config, "timeout_seconds": 20.0, "lease_seconds": 30.0}
    shared = [f"ord_shared_{i}" for i in range(150)]  # every process converts these
    own = {n: [f"ord_p{n}_{i}" for i in range(50)] for n in range(4)}
    children = [spawn(config, shared + own[n], flush=60) for n in range(4)]
    assert [c.wait(timeout=120) for c in children] == [0, 0, 0, 0]
    tl = TrackLayer({**config, "delivery": "worker"})
    try:
        ids = shared + [cid for n in range(4) for cid in own[n]]
        assert_accounted(tl, fake_x, ids)  # each id accepted by X exactly once
    finally:
        tl.close()


def test_fork_after_start_gives_the_child_its_own_sender(make_engine, fake_x):
    tl = make_engine()
    convert_all(tl, ["ord_parent_1"])
    assert tl.flush(20) and tl.sender.is_alive()
    busy = [f"ord_busy_{i}" for i in range(300)]
    tl.handoff([build_conversion(tl.settings, "purchase", conversion_id=cid,
                                 email=f"{cid}@example.com") for cid in busy])
    children = []
    for n in range(3):  # forks land while the parent's sender is using the outbox
        pid = os.fork()
        if pid == 0:  # the child: the parent's thread is gone; a new one must start
            code = 1
            signal.alarm(60)  # never outlive the test run, whatever happens
            try:
                convert_all(tl, [f"ord_child_{n}"])
                code = 0 if tl.flush(20) else 2
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0, 0, 0]
    convert_all(tl, ["ord_parent_2"])
    assert tl.flush(20)
    ids = ["ord_parent_1", "ord_parent_2", *busy, *(f"ord_child_{n}" for n in range(3))]
    assert_accounted(tl, fake_x, ids)


# ---------------------------------------------------------------------------- the disk fails
def _shop(engine: TrackLayer) -> TrackLayerWSGIMiddleware:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        tracker = current_tracker()
        assert tracker is not None
        tracker.convert("purchase", conversion_id="ord_web", email="buyer@example.com")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"thank you"]

    return TrackLayerWSGIMiddleware(app, engine)


def _break_outbox(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make every new SQLite connection fail like a read-only file or a full disk."""
    original = SQLiteOutbox._open

    def broken(self: SQLiteOutbox) -> sqlite3.Connection:
        if how == "read-only":  # opened read-only, as for a file this process cannot write
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            return conn
        conn = original(self)
        conn.execute("PRAGMA max_page_count = 1")  # SQLite's own "database or disk is full"
        return conn

    monkeypatch.setattr(SQLiteOutbox, "_open", broken)


@pytest.mark.parametrize(("how", "message"), [
    ("read-only", "is read-only"),
    ("disk-full", "disk full"),
])
def test_unwritable_outbox_is_a_clear_error_and_the_request_is_still_served(
    config, fake_x, monkeypatch, caplog, how, message,
):
    path = Path(config["outbox"].removeprefix("sqlite:///"))
    SQLiteOutbox(path).close()
    with sqlite3.connect(path) as conn:  # a real, existing outbox file
        conn.execute("SELECT 1")
    _break_outbox(monkeypatch, how)
    tl = TrackLayer(config)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=_shop(tl)),
                          base_url="http://shop.test") as client:
            response = client.get("/checkout/done")
        assert response.status_code == 200 and response.text == "thank you"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("could not write 1 conversions" in m and message in m for m in errors)
        assert tl.flush(0.2) is False  # still waiting, not pretending
        monkeypatch.undo()  # the operator fixes the disk; the buffered conversion goes out
        monkeypatch.setenv("X_ADS_BEARER_TOKEN", "test-token-not-a-secret")
        assert tl.flush(20)
        assert fake_x.accepted_ids() == {"ord_web": 1}
    finally:
        tl.close()
