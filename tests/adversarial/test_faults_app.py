"""Faults in the host app and its traffic: crashes after convert(), cancelled streams,
many threads, a thousand concurrent requests. Every conversion id is accounted for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from tests.adversarial.conftest import Ledger, Observed, Shop, shop_app
from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = pytest.mark.adversarial_fault


def order(cid: str) -> dict[str, Any]:
    return {"conversion_id": cid, "value": 129.95, "currency": "USD",
            "email": f"{cid}@example.com", "external_id": "cust_1"}


def test_app_raising_after_convert_sends_nothing(
    shop: Shop, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    crashed = shop.post("/checkout-then-crash", json=order("app_crash_1"))
    assert crashed.status_code == 500
    served = shop.post("/checkout", json=order("app_ok_1"))  # the control, same process
    assert served.status_code == 200
    assert shop.engine.flush(timeout=30)
    ledger.account({"app_ok_1"}, xapi.accepted_ids().elements())
    assert shop.engine.trace("app_crash_1") is None  # never reached the outbox
    shop.observed.server_errors = 0  # that 500 is the app's own, the case under test


@pytest.mark.parametrize("path", ["/checkout-then-503", "/stream-then-fail"])
def test_app_answering_5xx_or_failing_mid_stream_sends_nothing(
    shop: Shop, xapi: FakeXConversionsAPI, ledger: Ledger, path: str
) -> None:
    """A 503 answered on purpose, or a streamed body that fails after its 200 started: the
    response was not a success, so the request's conversions are dropped (and logged)."""
    response = shop.post(path, json=order("app_failed_1"))
    assert response.status_code >= 500 or path == "/stream-then-fail"
    shop.observed.server_errors = 0  # the app's own failure is the case under test
    assert shop.post("/checkout", json=order("app_ok_2")).status_code == 200
    assert shop.engine.flush(timeout=30)
    ledger.account({"app_ok_2"}, xapi.accepted_ids().elements())
    assert shop.engine.trace("app_failed_1") is None


def test_duplicate_convert_in_one_request_and_across_retried_webhooks(
    shop: Shop, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    for _ in range(3):  # a webhook delivered three times
        assert shop.post("/checkout", json=order("webhook_dup_1")).status_code == 200
    shop.engine.convert("purchase", attribution="29q0w6g2k2m4a", **order("webhook_dup_1"))
    assert shop.engine.flush(timeout=30)
    ledger.account({"webhook_dup_1"}, xapi.accepted_ids().elements())


async def _run_stream(app: Any, cid: str, *, fail: Callable[[int], BaseException | None]) -> None:
    """Drive ``GET /stream`` as raw ASGI; ``fail(n)`` decides how the n-th body send fails."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/stream", "raw_path": b"/stream",
             "query_string": f"cid={cid}".encode(), "root_path": "",
             "headers": [(b"host", b"shop.test")], "client": ("203.0.113.9", 5000),
             "server": ("shop.test", 80)}
    bodies = 0
    disconnected = anyio.Event()

    async def receive() -> dict[str, Any]:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            error = fail(bodies)
            if error is not None:
                disconnected.set()
                raise error

    try:
        await app(scope, receive, send)
    except (OSError, anyio.get_cancelled_exc_class()):
        pass


def test_streaming_response_cancelled_by_the_client(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """The client goes away mid-stream (the server's send raises OSError, like uvicorn's
    ClientDisconnected). The order was confirmed before streaming began: it is kept, once."""
    app = TrackLayerMiddleware(shop_app(), engine)
    anyio.run(lambda: _run_stream(app, "stream_cut_1",
                                  fail=lambda n: OSError("client went away") if n == 10 else None))
    assert engine.flush(timeout=30)
    ledger.account({"stream_cut_1"}, xapi.accepted_ids().elements())


def test_streaming_response_task_cancelled(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """The server cancels the request task mid-stream (disconnect seen by the server)."""
    app = TrackLayerMiddleware(shop_app(), engine)

    async def main() -> None:
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:
                started = anyio.Event()

                def fail(n: int) -> BaseException | None:
                    if n == 5:
                        started.set()
                    return None

                tg.start_soon(lambda: _run_stream(app, "stream_cancel_1", fail=fail))
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught

    anyio.run(main)
    assert engine.flush(timeout=30)
    received = xapi.accepted_ids()
    # A cancelled task never finished its response: dropping or keeping the conversion are
    # both documented outcomes, but never twice and never under another id.
    ledger.account(set(received) & {"stream_cancel_1"}, received.elements())


def test_many_threads_converting_in_one_process(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    ids = [f"thread_{t}_{i}" for t in range(8) for i in range(25)]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        barrier.wait()
        try:
            for i in range(25):
                cid = f"thread_{t}_{i}"
                engine.convert("purchase", attribution="29q0w6g2k2m4a", **order(cid))
                # Another thread repeats its neighbour's conversion (a retried job).
                engine.convert("purchase", attribution="29q0w6g2k2m4a",
                               **order(f"thread_{(t + 1) % 8}_{i}"))
        except BaseException as exc:  # reported below: a thread's error must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert engine.flush(timeout=60)
    ledger.account(ids, xapi.accepted_ids().elements())


def test_asgi_app_with_1000_concurrent_requests(
    shop: Shop, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    ids = [f"burst_{i}" for i in range(1000)]
    statuses: list[int] = []

    async def main() -> None:
        limits = httpx.Limits(max_connections=None)
        cookies = {"tl_attr": shop.engine.codec.dumps_cookie(CLICK)}  # visitors from an ad
        async with shop.client(limits=limits, cookies=cookies) as client, \
                anyio.create_task_group() as tg:
            async def one(cid: str) -> None:
                response = await client.post("/checkout", json=order(cid))
                statuses.append(shop.observed.status(response.status_code))

            for cid in ids:
                tg.start_soon(one, cid)

    anyio.run(main)
    assert statuses.count(200) == 1000
    assert shop.engine.flush(timeout=120)
    ledger.account(ids, xapi.accepted_ids().elements())


def _click() -> Any:
    from tracklayer_middleware.attribution import Attribution
    from tracklayer_middleware.consent import Consent

    return Attribution.capture("29q0w6g2k2m4a", "https://shop.test/", Consent(True, True))


CLICK = _click()


def _broken_resolver(request: Any) -> Any:
    raise RuntimeError("the CMP's cookie could not be parsed")


@pytest.mark.parametrize("resolver", [_broken_resolver, lambda request: "yes please"],
                         ids=["raises", "garbage"])
def test_consent_resolver_failing(
    make_engine: Callable[..., TrackLayer],
    observed: Observed,
    xapi: FakeXConversionsAPI,
    ledger: Ledger,
    resolver: Callable[[Any], Any],
) -> None:
    """The site's consent hook breaks: pages are still served, consent reads as unknown
    (not required here, so the confirmed order is still sent, once)."""
    shop = Shop(make_engine(consent_resolver=resolver), observed)
    assert shop.get("/pricing?twclid=resolverclick").status_code == 200
    assert shop.post("/checkout", json=order("resolver_1")).status_code == 200
    assert shop.engine.flush(timeout=30)
    ledger.account({"resolver_1"}, xapi.accepted_ids().elements())


def test_app_returning_without_any_response_sends_nothing(
    engine: TrackLayer, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """An ASGI app that converts and then returns without sending a response (the server
    answers 500 for it): nothing was confirmed to the client, nothing is sent."""

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        from tracklayer_middleware.tracker import current_tracker

        tracker = current_tracker()
        assert tracker is not None
        tracker.convert("purchase", conversion_id="silent_1", email="silent@example.com")

    app = TrackLayerMiddleware(silent, engine)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/silent", "raw_path": b"/silent",
             "query_string": b"", "root_path": "", "headers": [(b"host", b"shop.test")],
             "client": ("203.0.113.9", 5000), "server": ("shop.test", 80)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"nothing should be sent: {message}")

    anyio.run(app, scope, receive, send)
    engine.convert("purchase", conversion_id="silent_control", email="c@example.com")
    assert engine.flush(timeout=30)
    ledger.account({"silent_control"}, xapi.accepted_ids().elements())
