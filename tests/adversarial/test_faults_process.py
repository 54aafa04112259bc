"""Faults of the machine and the process: a locked outbox, a deleted outbox, SIGTERM while
draining, the clock stepping backwards, a sender cycle that raises. Every id accounted for.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import Ledger, Observed, Shop, base_config, wait_until
from tracklayer_middleware.delivery import sqlite_outbox
from tracklayer_middleware.delivery.client import SendResult, XConversionsClient
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI

pytestmark = pytest.mark.adversarial_fault

MakeEngine = Callable[..., TrackLayer]
ROOT = Path(__file__).resolve().parents[2]


def convert_all(engine: TrackLayer, ids: Sequence[str]) -> list[str]:
    for cid in ids:
        engine.convert("purchase", conversion_id=cid, attribution="29q0w6g2k2m4a")
    return list(ids)


def outbox_path(engine: TrackLayer) -> Path:
    return Path(engine.settings.outbox.removeprefix("sqlite:///"))


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT,
    )


@pytest.fixture
def locker() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Another process that holds the outbox's write lock until told to let go."""
    procs: list[subprocess.Popen[str]] = []

    def lock(path: Path) -> subprocess.Popen[str]:
        proc = spawn(
            """
            import sqlite3, sys
            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            sys.stdin.readline()  # held until the test says so
            conn.execute("COMMIT")
            """,
            str(path),
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield lock
    for proc in procs:
        proc.kill()
        proc.wait()


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(timeout=10) == 0


def test_sqlite_locked_by_another_process_longer_than_busy_timeout(
    shop: Shop,
    xapi: FakeXConversionsAPI,
    ledger: Ledger,
    locker: Callable[[Path], subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lock outlives the busy timeout (10 s in production, 0.3 s here, same mechanism):
    the request is served, the conversion waits in memory, and lands once the lock goes."""
    monkeypatch.setattr(sqlite_outbox, "BUSY_TIMEOUT_MS", 300)
    convert_all(shop.engine, ["lock_before"])  # opens the outbox (with the short timeout)
    assert shop.engine.flush(timeout=30)
    holder = locker(outbox_path(shop.engine))
    response = shop.post("/checkout", json={"conversion_id": "lock_during",
                                            "email": "locked@example.com"})
    assert response.status_code == 200
    release(holder)
    assert shop.engine.flush(timeout=30)
    ledger.account({"lock_before", "lock_during"}, xapi.accepted_ids().elements())


def test_outbox_deleted_while_running(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """Someone deletes the outbox file under a running engine. What was in it is gone with
    it; but every conversion made AFTER the deletion must be durable: written to a file at
    the configured path, so a restart still delivers it."""
    with FakeXConversionsAPI(pixel_ids=["o1a2b"]) as gone:
        unreachable = gone.base_url
    engine = make_engine(api_base_url=unreachable)
    convert_all(engine, ["deleted_before"])
    path = outbox_path(engine)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    after = convert_all(engine, ["deleted_after_1", "deleted_after_2"])
    engine.close(timeout=0)
    restarted = make_engine()
    assert restarted.flush(timeout=30)
    ledger.account(after, (cid for cid in xapi.accepted_ids().elements()
                           if cid != "deleted_before"))


SIGTERM_CHILD = """
import json, signal, sys
from tracklayer_middleware.engine import TrackLayer
config, ids = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if sys.argv[3] == "graceful":  # like gunicorn's worker: exit normally, atexit closes the engine
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
engine = TrackLayer(config)
for cid in ids:
    engine.convert("purchase", conversion_id=cid, attribution="29q0w6g2k2m4a")
print("queued", flush=True)
engine.flush(timeout=120)
print("drained", flush=True)
"""


@pytest.mark.parametrize("handling", ["default", "graceful"])
def test_sigterm_during_drain(
    tmp_path: Path, xapi: FakeXConversionsAPI, ledger: Ledger, make_settings: Any,
    handling: str,
) -> None:
    ids = [f"sigterm_{i}" for i in range(40)]
    overrides = {"api_base_url": xapi.base_url, "batch_size": 5, "timeout_seconds": 2.0,
                 "lease_seconds": 3.0}
    xapi.delay = 0.2  # a slow X: the drain takes a while
    child = spawn(SIGTERM_CHILD, json.dumps(base_config(tmp_path, **overrides)), json.dumps(ids),
                  handling)
    assert child.stdout is not None and child.stdout.readline().strip() == "queued"
    assert xapi.wait_for_requests(2, timeout=30)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    xapi.delay = None
    # Conversions X received but the child never recorded as sent are the ambiguous ones:
    # resending them (same conversion_id) is right; anything else twice is a double.
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        sent = {cid for (cid,) in conn.execute(
            "SELECT conversion_id FROM outbox WHERE state = 'sent'")}
    ambiguous = set(xapi.received_ids()) - sent
    engine = TrackLayer(make_settings(**overrides))
    try:
        assert engine.flush(timeout=60), engine.stats()
    finally:
        engine.close(timeout=2)
    ledger.account(ids, xapi.accepted_ids().elements(), resend_allowed=ambiguous)


def test_clock_jumps_backwards_an_hour(
    make_engine: MakeEngine,
    xapi: FakeXConversionsAPI,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NTP steps the clock back an hour while two conversions wait for a retry. New ones
    still go out at once; the waiting ones keep their wall-clock schedule (an hour late,
    documented in docs/reliability.md) and go out, once each, when the clock has caught up."""
    engine = make_engine(retry_base_seconds=1.0, retry_max_seconds=1.0)
    xapi.script(503)
    ids = convert_all(engine, ["clock_1", "clock_2"])
    wait_until(engine, lambda: states(engine, ids) == {"retrying"} or len(xapi.accepted) == 2)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    engine.sender._clock = time.time  # the sender's injected clock jumps too
    before = len(xapi.accepted)
    ids += convert_all(engine, ["clock_3"])
    assert xapi.wait_for(before + 1, timeout=30) and "clock_3" in xapi.accepted_ids()
    monkeypatch.setattr(time, "time", real)  # an hour later: the clock has caught up
    engine.sender._clock = real
    assert engine.flush(timeout=30), engine.stats()
    ledger.account(ids, xapi.accepted_ids().elements())


def states(engine: TrackLayer, ids: Sequence[str]) -> set[str]:
    return {trace.state for trace in map(engine.trace, ids) if trace is not None}


class FlakyClient:
    """The real client, but its first ``send`` raises as a bug in our own code would."""

    def __init__(self, settings: TrackLayerSettings) -> None:
        self.real = XConversionsClient(settings)
        self.calls = 0

    def send(self, conversions: Sequence[dict[str, Any]], *, pixel_id: str | None = None
             ) -> SendResult:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("unexpected bug while sending")
        return self.real.send(conversions, pixel_id=pixel_id)

    def close(self) -> None:
        self.real.close()


def test_sender_cycle_raising_does_not_stop_delivery(
    make_settings: Any, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    settings = make_settings(api_base_url=xapi.base_url, timeout_seconds=1.0, lease_seconds=2.0)
    engine = TrackLayer(settings, client=FlakyClient(settings))
    try:
        ids = convert_all(engine, ["flaky_1", "flaky_2"])
        assert engine.flush(timeout=12), engine.stats()  # lease 2 s + a back-off
        ids += convert_all(engine, ["flaky_3"])  # and the sender still works afterwards
        assert engine.flush(timeout=30), engine.stats()
    finally:
        engine.close(timeout=2)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_engine_restart_mid_retry_resends_the_same_ids(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """A deploy restarts the process while X is failing: the new process sends the very
    same conversion ids (no new ids minted, nothing dropped)."""
    xapi.script(*[FakeResponse(503)] * 3)
    first = make_engine()
    ids = convert_all(first, ["restart_1", "restart_2", "restart_3"])
    assert xapi.wait_for_requests(1)
    first.close(timeout=0)
    second = make_engine()
    assert second.flush(timeout=30), second.stats()
    ledger.account(ids, xapi.accepted_ids().elements())


def test_outbox_file_corrupt_at_start(
    tmp_path: Path,
    make_engine: MakeEngine,
    observed: Observed,
    xapi: FakeXConversionsAPI,
    ledger: Ledger,
) -> None:
    """The shop starts on an outbox file full of garbage: pages are still served, the
    request's conversions wait in memory, and once an operator moves the broken file away
    they are committed to a fresh outbox and delivered."""
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database " * 512)
    shop = Shop(make_engine(), observed)
    response = shop.post("/checkout", json={"conversion_id": "corrupt_during",
                                            "email": "corrupt@example.com"})
    assert response.status_code == 200
    path.rename(path.with_suffix(".broken"))  # the operator's fix
    assert shop.engine.flush(timeout=30), shop.engine.stats()
    ledger.account({"corrupt_during"}, xapi.accepted_ids().elements())


def test_clock_jumps_forward_a_day(
    make_engine: MakeEngine,
    xapi: FakeXConversionsAPI,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clock leaps a day ahead while X is failing: leases and backoffs look long over,
    which may only make things due sooner — still once each, and nothing dead early."""
    engine = make_engine()
    xapi.script(503, 503, 503)
    ids = convert_all(engine, ["leap_1", "leap_2"])
    assert xapi.wait_for_requests(1)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400)
    engine.sender._clock = time.time
    ids += convert_all(engine, ["leap_3"])
    assert engine.flush(timeout=30), engine.stats()
    ledger.account(ids, xapi.accepted_ids().elements())
    assert states(engine, ids) == {"sent"}
