"""The same hostile inputs and app faults through the WSGI shell (its own body reading,
status capture and ``close()`` hand-off), over ``httpx.WSGITransport``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest

from tests.adversarial.conftest import Ledger, Observed, attribution_cookie
from tracklayer_middleware.attribution import Attribution
from tracklayer_middleware.consent import Consent
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeXConversionsAPI
from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

StartResponse = Callable[..., Any]
GOOD = {"twclid": "29q0w6g2k2m4a", "consent": {"adStorage": "granted", "adUserData": "granted"}}


def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A plain WSGI shop: /whoami, /checkout, /crash-after-convert, /stream-then-fail."""
    tracker = environ["tracklayer.tracker"]
    path = environ["PATH_INFO"]
    if path == "/whoami":
        click = tracker.attribution
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"twclid": click.twclid if click else None}).encode()]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = json.loads(environ["wsgi.input"].read(length) or b"{}")
    tracker.convert("purchase", **data)
    if path == "/crash-after-convert":
        raise RuntimeError("the order could not be saved after all")
    start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/stream-then-fail":
        return _failing_stream()
    return [b"thanks"]


def _failing_stream() -> Iterator[bytes]:
    yield b"part one"
    raise RuntimeError("the template blew up half-way")


class WSGIShop:
    def __init__(self, engine: TrackLayer, observed: Observed) -> None:
        self.engine = engine
        self.observed = observed
        app = TrackLayerWSGIMiddleware(shop, engine)
        transport = httpx.WSGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.Client(transport=transport, base_url="http://shop.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        self.observed.status(response.status_code)
        return response

    def report(self, **kwargs: Any) -> httpx.Response:
        headers = {"origin": "http://shop.test", "content-type": "application/json",
                   **kwargs.pop("headers", {})}
        return self.request("POST", self.engine.settings.attribution_path, headers=headers,
                            **kwargs)


@pytest.fixture
def wsgi(engine: TrackLayer, observed: Observed) -> Iterator[WSGIShop]:
    shop_ = WSGIShop(engine, observed)
    yield shop_
    shop_.client.close()


def click_cookie(engine: TrackLayer) -> str:
    attribution = Attribution.capture("29q0w6g2k2m4a", "https://shop.test/", Consent(True, True))
    return engine.codec.dumps_cookie(attribution)


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.adversarial_input
def test_wsgi_tampered_cookie(wsgi: WSGIShop) -> None:
    value = click_cookie(wsgi.engine)
    response = wsgi.request("GET", "/whoami", headers={"cookie": f"tl_attr={value[:-2]}xx"})
    assert response.status_code == 200 and response.json()["twclid"] is None


@pytest.mark.adversarial_input
def test_wsgi_non_utf8_cookie(engine: TrackLayer, observed: Observed) -> None:
    """Raw environ: WSGI servers hand header bytes over as latin-1 text (httpx refuses)."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/whoami", "QUERY_STRING": "",
               "SERVER_NAME": "shop.test", "SERVER_PORT": "80", "HTTP_HOST": "shop.test",
               "wsgi.url_scheme": "http", "REMOTE_ADDR": "203.0.113.7",
               "HTTP_COOKIE": b"tl_attr=\xff\xfe\x80.\xc3(; tl_attr=\x00".decode("latin-1")}
    seen: list[str] = []
    app = TrackLayerWSGIMiddleware(shop, engine)
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    try:
        payload = b"".join(body)
    finally:
        body.close()  # type: ignore[attr-defined]
    assert observed.status(int(seen[0].split()[0])) == 200
    assert json.loads(payload)["twclid"] is None


@pytest.mark.adversarial_input
def test_wsgi_crlf_twclid(wsgi: WSGIShop) -> None:
    response = wsgi.request("GET", "/whoami?twclid=a%0d%0aSet-Cookie:%20x=1")
    assert response.status_code == 200 and attribution_cookie(response) is None


@pytest.mark.adversarial_input
def test_wsgi_bad_json(wsgi: WSGIShop) -> None:
    assert wsgi.report(content=b"{nope").status_code == 400


@pytest.mark.adversarial_input
def test_wsgi_huge_body_with_length(wsgi: WSGIShop) -> None:
    response = wsgi.report(content=json.dumps({**GOOD, "pad": "x" * 9000}))
    assert response.status_code == 413 and attribution_cookie(response) is None


@pytest.mark.adversarial_input
def test_wsgi_chunked_without_length(wsgi: WSGIShop) -> None:
    """No Content-Length and no ``wsgi.input_terminated``: the body cannot be delimited
    safely; a clean 4xx (never a 5xx, never a read past the limit)."""
    def chunks() -> Iterator[bytes]:
        yield json.dumps(GOOD).encode()

    response = wsgi.report(content=chunks())
    assert 400 <= response.status_code < 500 or response.status_code == 204


@pytest.mark.adversarial_input
def test_wsgi_chunked_huge_without_length(wsgi: WSGIShop) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"twclid": "29q0w6g2k2m4a", "pad": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}'

    response = wsgi.report(content=chunks())
    assert 400 <= response.status_code < 500 and attribution_cookie(response) is None


@pytest.mark.adversarial_input
def test_wsgi_content_length_shorter_than_the_body(wsgi: WSGIShop) -> None:
    body = json.dumps(GOOD).encode()
    response = wsgi.report(content=body + b" " * 100, headers={"content-length": "5"})
    assert response.status_code == 400


@pytest.mark.adversarial_input
@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_wsgi_wrong_method(wsgi: WSGIShop, method: str) -> None:
    response = wsgi.request(method, wsgi.engine.settings.attribution_path)
    assert response.status_code == 405


@pytest.mark.adversarial_input
def test_wsgi_foreign_origin(wsgi: WSGIShop) -> None:
    response = wsgi.report(content=json.dumps(GOOD), headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and attribution_cookie(response) is None


# ----------------------------------------------------------------------------- faults
@pytest.mark.adversarial_fault
def test_wsgi_app_raising_after_convert_sends_nothing(
    wsgi: WSGIShop, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    with pytest.raises(RuntimeError):  # the server turns it into its 500 page
        wsgi.client.post("/crash-after-convert",
                         json={"conversion_id": "wsgi_crash", "email": "a@example.com"})
    assert wsgi.request("POST", "/checkout", json={"conversion_id": "wsgi_ok",
                                                   "email": "a@example.com"}).status_code == 200
    assert wsgi.engine.flush(timeout=30)
    ledger.account({"wsgi_ok"}, xapi.accepted_ids().elements())
    assert wsgi.engine.trace("wsgi_crash") is None


@pytest.mark.adversarial_fault
def test_wsgi_iterable_failing_mid_stream_sends_nothing(
    wsgi: WSGIShop, xapi: FakeXConversionsAPI, ledger: Ledger
) -> None:
    """200 was started, then the body failed: the response never completed, so the
    conversion is dropped (and logged), as for ASGI: never half-delivered, never twice."""
    with pytest.raises(RuntimeError):
        wsgi.client.post("/stream-then-fail", json={"conversion_id": "wsgi_stream_fail",
                                                    "email": "a@example.com"})
    assert wsgi.engine.flush(timeout=30)
    ledger.account(set(), xapi.accepted_ids().elements())
