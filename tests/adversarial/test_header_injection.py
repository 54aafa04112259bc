"""Header injection through every value that reaches a header we write.

Our headers: ``Set-Cookie`` (click id, landing URL, host, scheme from trusted proxies),
the endpoint's CORS ``Access-Control-Allow-Origin`` (echoes an allowed Origin) and, towards
X, ``Authorization`` (the token from the environment) and the URL (pixel id). Requests are
driven as raw ASGI so the hostile bytes reach the middleware unfiltered by a client library.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import pytest

from tests.adversarial.conftest import (
    PIXEL_ID,
    TOKEN,
    TOKEN_ENV,
    Ledger,
    Observed,
    asgi_call,
    shop_app,
)
from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = pytest.mark.adversarial_input

COOKIE_RE = re.compile(
    r"^(__Host-)?tl_attr=[A-Za-z0-9_.-]*; Path=/; Max-Age=\d+; HttpOnly; SameSite=Lax(; Secure)?$"
)
EVIL = b"\r\nSet-Cookie: session=attacker\r\nX-Injected: 1"


def raw_request(
    engine: TrackLayer,
    observed: Observed,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    client: tuple[str, int] = ("203.0.113.7", 51000),
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """One request through the middleware as raw ASGI; (status, response headers)."""
    status, out = asgi_call(
        TrackLayerMiddleware(shop_app(), engine), method, path, query=query,
        headers=[(b"host", b"shop.test"), *headers], body=body, client=client,
    )
    observed.status(status)
    return status, out


def assert_clean(headers: list[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        for part in (name, value):
            assert not re.search(rb"[\r\n\x00]", part), (name, value)
        if name.lower() == b"set-cookie":
            assert COOKIE_RE.match(value.decode("latin-1")), value
    names = [name.lower() for name, _ in headers]
    assert b"x-injected" not in names
    assert not any(value.startswith(b"session=") for _, value in headers)


def test_crlf_in_twclid_query(engine: TrackLayer, observed: Observed) -> None:
    status, headers = raw_request(engine, observed, "GET", "/pricing",
                                  query=b"twclid=abc%0d%0aSet-Cookie:%20session=attacker")
    assert status == 200
    assert_clean(headers)


def test_crlf_in_utm_params_of_a_valid_landing(engine: TrackLayer, observed: Observed) -> None:
    status, headers = raw_request(
        engine, observed, "GET", "/pricing",
        query=b"twclid=goodclick&utm_source=x%0d%0aSet-Cookie:%20session=attacker&utm_x=%00",
    )
    assert status == 200
    assert_clean(headers)
    assert any(name == b"set-cookie" for name, _ in headers)  # the valid click still lands


def test_hostile_host_header_on_a_landing(engine: TrackLayer, observed: Observed) -> None:
    status, headers = raw_request(engine, observed, "GET", "/pricing", query=b"twclid=goodclick",
                                  headers=[(b"host", b"shop.test" + EVIL)])
    assert status == 200
    assert_clean(headers)


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    engine: TrackLayer, observed: Observed
) -> None:
    status, headers = raw_request(
        engine, observed, "GET", "/pricing", query=b"twclid=goodclick",
        headers=[(b"x-forwarded-proto", b"https" + EVIL), (b"x-forwarded-host", b"evil" + EVIL)],
    )
    assert status == 200
    assert_clean(headers)
    cookie = next(value for name, value in headers if name == b"set-cookie")
    assert not cookie.startswith(b"__Host-")  # untrusted peer cannot claim HTTPS


def test_forwarded_host_from_a_trusted_proxy_stays_inside_the_signed_cookie(
    make_engine: Callable[..., TrackLayer], observed: Observed
) -> None:
    engine = make_engine(trusted_proxies=["203.0.113.0/24"])
    status, headers = raw_request(
        engine, observed, "GET", "/pricing", query=b"twclid=goodclick",
        headers=[(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"shop.test" + EVIL)],
    )
    assert status == 200
    assert_clean(headers)
    value = next(v for n, v in headers if n == b"set-cookie").split(b";")[0].partition(b"=")[2]
    stored = engine.codec.loads_cookie(value.decode())
    assert stored is not None and stored.twclid == "goodclick"
    assert stored.landing_url is None or "\r" not in stored.landing_url


@pytest.mark.parametrize(
    "origin",
    [
        b"https://partner.example" + EVIL,
        b"https://partner.example\r\n",
        b"https://partner.example\tX-Injected: 1",
        b"https://PARTNER.example:443",
    ],
)
def test_origin_echoed_in_cors_headers(
    make_engine: Callable[..., TrackLayer], observed: Observed, origin: bytes
) -> None:
    engine = make_engine(allowed_origins=["https://partner.example"])
    for method in ("OPTIONS", "POST"):
        status, headers = raw_request(
            engine, observed, method, engine.settings.attribution_path,
            headers=[(b"origin", origin), (b"content-type", b"application/json")],
            body=b'{"twclid": "goodclick"}',
        )
        assert status < 500
        assert_clean(headers)
        for name, value in headers:
            if name == b"access-control-allow-origin":
                assert value == b"https://partner.example"


def test_crlf_in_the_token_never_injects_a_header_towards_x(
    make_engine: Callable[..., TrackLayer],
    xapi: FakeXConversionsAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    ledger: Ledger,
) -> None:
    """A token pasted with a newline: nothing sent with a forged header, nothing lost."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(TOKEN_ENV, TOKEN + "\r\nX-Injected: 1")
    engine = make_engine()
    engine.convert("purchase", conversion_id="ord_crlf_token", attribution="goodclick")
    engine.flush(timeout=0.5)
    assert all("x-injected" not in r.headers for r in xapi.requests)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the operator fixes the variable (read at use time)
    engine.sender._clock = lambda: time.time() + 3600  # the paused pixel's next probe is due
    engine.sender.wake()
    assert xapi.wait_for(1, timeout=10), engine.stats()
    assert engine.flush(timeout=30)
    ledger.account({"ord_crlf_token"}, xapi.accepted_ids().elements())
    assert TOKEN not in caplog.text


def test_pixel_id_with_path_characters_is_refused_before_any_url_is_built(
    make_engine: Callable[..., TrackLayer], observed: Observed
) -> None:
    from tracklayer_middleware.errors import ConfigurationError

    for pixel in (f"{PIXEL_ID}/../../admin", f"{PIXEL_ID}?x=1", f"{PIXEL_ID}#", f"{PIXEL_ID}%2F"):
        outcome = observed.calls(make_engine, pixelId=pixel)
        assert isinstance(outcome, ConfigurationError)
