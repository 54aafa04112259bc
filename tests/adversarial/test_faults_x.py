"""Faults on X's side, against the fake X over real HTTP and a real SQLite outbox.

Every case ends with the ledger: each conversion_id we created was accepted by X (0 lost),
none twice unless the failure was ambiguous (X may have processed it; resending the SAME
conversion_id is then correct and X dedups it), and no id we did not create (0 doubled).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable

import pytest

from tests.adversarial.conftest import TOKEN, TOKEN_ENV, Ledger, wait_until
from tracklayer_middleware.conversion import build_conversion
from tracklayer_middleware.delivery.outbox import State
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI

pytestmark = pytest.mark.adversarial_fault

MakeEngine = Callable[..., TrackLayer]


def convert_all(engine: TrackLayer, ids: Iterable[str]) -> list[str]:
    made = []
    for cid in ids:
        engine.convert("purchase", conversion_id=cid, value=10.0, currency="USD",
                       attribution="29q0w6g2k2m4a", email=f"{cid}@example.com")
        made.append(cid)
    return made


def drained(engine: TrackLayer, xapi: FakeXConversionsAPI, n: int, timeout: float = 30) -> None:
    assert engine.flush(timeout=timeout), engine.stats()
    assert xapi.wait_for(n, timeout=timeout), engine.stats()


def states(engine: TrackLayer, ids: Iterable[str]) -> set[str]:
    return {trace.state for trace in map(engine.trace, ids) if trace is not None}


def test_x_500_three_times_then_200(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(500, 500, 500)
    ids = convert_all(engine, ["f500_1", "f500_2"])
    drained(engine, xapi, 2)
    ledger.account(ids, xapi.accepted_ids().elements())
    assert states(engine, ids) == {State.SENT}


def test_x_503_with_an_html_body(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(503, body="<html>upstream connect error</html>"))
    ids = convert_all(engine, ["f503_html"])
    drained(engine, xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_x_200_with_a_malformed_body_is_resent_with_the_same_id(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(200, malformed_body=True))
    ids = convert_all(engine, ["f200_garbage"])
    drained(engine, xapi, 2)  # processed once, answered garbage; resent once
    ledger.account(ids, xapi.accepted_ids().elements(), resend_allowed=ids)
    assert xapi.received_ids()["f200_garbage"] == 2


def test_x_200_saying_nothing_was_processed_is_resent(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(200, body={"data": {"conversions_processed": 0}}))
    ids = convert_all(engine, ["f200_zero"])
    drained(engine, xapi, 2)
    ledger.account(ids, xapi.accepted_ids().elements(), resend_allowed=ids)


def test_x_closes_the_connection_after_reading_the_body(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(drop_after_read=True))
    ids = convert_all(engine, ["f_drop_after_read_1", "f_drop_after_read_2"])
    drained(engine, xapi, 3)  # the dropped batch was processed, then resent
    ledger.account(ids, xapi.accepted_ids().elements(), resend_allowed=ids)
    bodies = [r.conversions() for r in xapi.requests]
    assert all({c["conversion_id"] for c in body} <= set(ids) for body in bodies)


def test_x_drops_the_connection_before_processing(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(drop_connection=True), FakeResponse(drop_connection=True))
    ids = convert_all(engine, ["f_drop_1"])
    drained(engine, xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_slow_loris_x_times_out_and_the_same_id_is_resent(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    engine = make_engine(timeout_seconds=0.3, lease_seconds=5)
    xapi.script(FakeResponse(200, delay=1.0))
    ids = convert_all(engine, ["f_slow_1"])
    drained(engine, xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements(), resend_allowed=ids)
    attempts = engine.trace("f_slow_1").attempts  # type: ignore[union-attr]
    assert len(attempts) >= 2 and attempts[0].state != State.SENT


def test_dns_failure_keeps_everything_until_x_is_reachable(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    broken = make_engine(api_base_url="http://nonexistent.invalid")
    ids = convert_all(broken, ["f_dns_1", "f_dns_2"])
    assert not broken.flush(timeout=0.5)  # cannot drain: nothing may be marked sent
    assert states(broken, ids) <= {State.PENDING, State.RETRYING, State.IN_FLIGHT}
    broken.close(timeout=0)
    fixed = make_engine()  # the operator fixes the URL and restarts: same outbox file
    drained(fixed, xapi, 2)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_connection_refused(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    with FakeXConversionsAPI(pixel_ids=["o1a2b"], token=TOKEN) as gone:
        dead_url = gone.base_url
    refused = make_engine(api_base_url=dead_url)
    ids = convert_all(refused, ["f_refused_1"])
    assert not refused.flush(timeout=0.3)
    refused.close(timeout=0)
    drained(make_engine(), xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_x_429_with_retry_after(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(429, headers={"Retry-After": "1"}))
    ids = convert_all(engine, ["f429_1", "f429_2"])
    drained(engine, xapi, 2)
    ledger.account(ids, xapi.accepted_ids().elements())
    trace = engine.trace("f429_1")
    assert trace is not None and trace.state == State.SENT


def test_x_429_with_a_garbage_retry_after(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """Unreadable rate-limit headers: a pause clamped to 1-300 s, no attempt used, kept."""
    garbage = {"Retry-After": "soon, maybe", "x-rate-limit-reset": "-"}
    xapi.script(FakeResponse(429, headers=garbage))
    ids = convert_all(engine, ["f429_garbage"])
    assert xapi.wait_for_requests(1)
    engine.flush(timeout=0.3)
    pause = engine.outbox.pauses()["o1a2b"]
    assert 1 <= pause.until - time.time() <= 300
    assert states(engine, ids) <= {State.RETRYING, State.PENDING}
    engine.sender._clock = lambda: time.time() + 301  # the sender's clock: the pause is over
    assert xapi.wait_for(1, timeout=10), engine.stats()
    drained(engine, xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_x_401_then_the_token_is_rotated(
    engine: TrackLayer,
    xapi: FakeXConversionsAPI,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    xapi.set_token("rotated-token-2")  # X revoked ours
    ids = convert_all(engine, ["f401_1", "f401_2", "f401_3"])
    assert xapi.wait_for_requests(1)
    engine.flush(timeout=0.5)
    assert not xapi.accepted
    assert states(engine, ids) <= {State.PAUSED, State.PENDING, State.RETRYING, State.IN_FLIGHT}
    monkeypatch.setenv(TOKEN_ENV, "rotated-token-2")  # the operator rotates the token
    assert xapi.wait_for(3, timeout=15), engine.stats()
    drained(engine, xapi, 3)
    ledger.account(ids, xapi.accepted_ids().elements())


@pytest.mark.parametrize("status", [403, 404])
def test_x_403_404_pause_keep_and_resume(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger, status: int
) -> None:
    xapi.script(status)
    ids = convert_all(engine, [f"f{status}_1", f"f{status}_2"])
    assert xapi.wait_for(2, timeout=15), engine.stats()  # the probe finds X fixed
    drained(engine, xapi, 2)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_x_400_on_a_batch_is_bisected_to_the_one_bad_conversion(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    good = [build_conversion(engine.settings, "purchase", conversion_id=f"f400_{i}",
                             attribution="29q0w6g2k2m4a") for i in range(9)]
    bad = dataclasses.replace(good[0], conversion_id="f400_bad", hashed_email="not-a-sha256")
    engine.handoff([*good[:4], bad, *good[4:]])
    assert engine.flush(timeout=10)
    good_ids = [c.conversion_id for c in good]
    ledger.account(good_ids, xapi.accepted_ids().elements())
    dead = engine.trace("f400_bad")
    assert dead is not None and dead.state == State.DEAD
    assert dead.last_code and dead.last_error


def test_x_redirect_is_not_followed(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    xapi.script(FakeResponse(307, headers={"Location": "http://127.0.0.1:9/steal"}))
    ids = convert_all(engine, ["f_redirect"])
    drained(engine, xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements())
    assert all(r.path.startswith("/12/measurement/conversions/") for r in xapi.requests)



def test_flush_shorter_than_the_lease_waits_for_a_slow_post(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """X takes its time; flush(timeout) shorter than the lease must wait for the POST on the
    wire rather than give up because the row's lease outlives the deadline."""
    engine = make_engine(timeout_seconds=5, lease_seconds=60)
    xapi.script(FakeResponse(200, delay=0.5))
    ids = convert_all(engine, ["f_inflight_flush"])
    wait_until(engine, lambda: states(engine, ids) == {State.IN_FLIGHT})
    assert engine.flush(timeout=10), engine.stats()
    ledger.account(ids, xapi.accepted_ids().elements())


def test_long_outage_more_attempts_than_max_attempts_is_not_dead(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """X fails 15 times in a row (more than max_attempts=12, but well under 72 h): a
    conversion goes dead only after BOTH, so it is still retried and delivered."""
    engine = make_engine()
    xapi.script(*[500] * 15)
    ids = convert_all(engine, ["f_outage_1"])
    assert xapi.wait_for_requests(15, timeout=30)
    drained(engine, xapi, 1)
    ledger.account(ids, xapi.accepted_ids().elements())
    trace = engine.trace("f_outage_1")
    assert trace is not None and trace.state == State.SENT and len(trace.attempts) >= 16


def test_two_engines_sharing_one_outbox_file(
    make_engine: MakeEngine, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """Two web workers (one engine each, each with its sender) on one SQLite file, X slow and
    failing now and then: every id accepted once."""
    xapi.script(503, FakeResponse(200, delay=0.2), 503)
    first, second = make_engine(batch_size=7), make_engine(batch_size=7)
    ids = [f"f_shared_{i}" for i in range(60)]
    for i, cid in enumerate(ids):
        convert_all(first if i % 2 else second, [cid])
    assert first.flush(timeout=60) and second.flush(timeout=60)
    ledger.account(ids, xapi.accepted_ids().elements())


@pytest.mark.parametrize("status", [408, 413, 502, 504, 520])
def test_x_or_a_proxy_in_front_of_it_answers_an_undocumented_status(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger, status: int
) -> None:
    """408 (a proxy's idle timeout), 413 (a gateway's body limit: the batch is split), 502 /
    504 / 520 (a CDN in front of X): a batch is retried or split, never dropped."""
    xapi.script(FakeResponse(status, body="<html>proxy error</html>"))
    batch = [build_conversion(engine.settings, "purchase", conversion_id=f"f{status}_{i}",
                              attribution="29q0w6g2k2m4a") for i in range(3)]
    engine.handoff(batch)  # one commit: the three travel in one batch
    ids = [c.conversion_id for c in batch]
    drained(engine, xapi, 3)
    ledger.account(ids, xapi.accepted_ids().elements())


class TricklingX:
    """A stand-in for X that, on its first request, accepts the batch and then sends its
    answer one byte at a time (each byte well within a per-read timeout): the slow-loris
    that only a total deadline stops. Later requests are answered at once."""

    def __init__(self) -> None:
        import socketserver
        import threading

        self.accepted: list[str] = []
        self.stopping = threading.Event()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                header, _, body = head.partition(b"\r\n\r\n")
                length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += self.request.recv(65536)
                first = not outer.accepted
                outer.accepted += [c["conversion_id"] for c in json.loads(body)["conversions"]]
                answer = json.dumps({"data": {"conversions_processed": 1, "debug_id": "t"}})
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(answer))
                for byte in answer.encode():
                    if first and outer.stopping.wait(0.05):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def test_slow_loris_trickling_answer_is_cut_by_the_total_timeout(
    make_engine: MakeEngine, ledger: Ledger
) -> None:
    """timeout_seconds is the TOTAL time of one POST: an answer trickled byte by byte (5 s
    here) must not hold the sender past it — or past its lease, where another sender would
    take the row over while the first is still talking to X."""
    trickle = TricklingX()
    try:
        engine = make_engine(api_base_url=trickle.base_url, timeout_seconds=1.0,
                             lease_seconds=2.0)
        ids = convert_all(engine, ["f_trickle_1"])
        assert engine.flush(timeout=30), engine.stats()
        trace = engine.trace("f_trickle_1")
        assert trace is not None and trace.attempts[0].state != State.SENT, str(trace)
        ledger.account(ids, trickle.accepted, resend_allowed=ids)
    finally:
        trickle.close()
