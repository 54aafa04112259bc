"""Hostile reports to ``POST /api/tracklayer/session-attribution``, answered by the middleware.

The design's answers: 204 + cookie for a good report, 400 JSON error for bad input, 413 over
8 KiB, 405 for other methods, cross-site posts refused. Never a 5xx, and a refused report
never sets a cookie.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.adversarial.conftest import Shop, attribution_cookie

pytestmark = pytest.mark.adversarial_input

GOOD = {
    "twclid": "29q0w6g2k2m4a",
    "landingUrl": "https://shop.test/pricing?utm_source=x",
    "consent": {"adStorage": "granted", "adUserData": "granted"},
}


def refused(response: Any, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert attribution_cookie(response) is None
    if status not in (204, 405):
        assert response.headers["content-type"].startswith("application/json")
        assert isinstance(response.json()["error"], str)


def stored(shop: Shop, response: Any) -> Any:
    assert response.status_code == 204, response.text
    value = attribution_cookie(response)
    assert value is not None
    attribution = shop.engine.codec.loads_cookie(value)
    assert attribution is not None
    return attribution


def test_good_report_control_case(shop: Shop) -> None:
    assert stored(shop, shop.report(GOOD)).twclid == GOOD["twclid"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe{}", id="non-utf8"),
        pytest.param(b"[" * 4000 + b"]" * 4000, id="deep-nesting"),
        pytest.param(b'{"twclid": NaN}', id="nan-literal"),
        pytest.param(b'{"twclid": ' + b"9" * 5000 + b"}", id="5000-digit-int"),
    ],
)
def test_bad_json(shop: Shop, body: bytes) -> None:
    refused(shop.report(content=body, headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(["29q0w6g2k2m4a"], id="array"),
        pytest.param("29q0w6g2k2m4a", id="string"),
        pytest.param({**GOOD, "twclid": 12345}, id="twclid-number"),
        pytest.param({**GOOD, "twclid": ["a"]}, id="twclid-list"),
        pytest.param({**GOOD, "twclid": "bad twclid!"}, id="twclid-pattern"),
        pytest.param({**GOOD, "landingUrl": {"href": "x"}}, id="landing-object"),
        pytest.param({**GOOD, "consent": "granted"}, id="consent-string"),
        pytest.param({**GOOD, "consent": {"adStorage": "maybe"}}, id="consent-word"),
        pytest.param({"landingUrl": "https://shop.test/"}, id="no-twclid"),
    ],
)
def test_wrong_types(shop: Shop, body: Any) -> None:
    refused(shop.report(body), 400)


def test_huge_body_with_length(shop: Shop) -> None:
    body = json.dumps({**GOOD, "pad": "x" * 9000})
    refused(shop.report(content=body, headers={"content-type": "application/json"}), 413)


def test_lying_content_length(shop: Shop) -> None:
    body = json.dumps(GOOD).encode()
    headers = {"content-type": "application/json", "content-length": "-5"}
    response = shop.report(content=body, headers=headers)
    assert response.status_code in (400, 413)
    assert attribution_cookie(response) is None


def test_chunked_body_without_length_over_the_limit(shop: Shop) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"twclid": "29q0w6g2k2m4a", "pad": "'
        for _ in range(100):
            yield b"x" * 1024  # 100 KiB, never announced
        yield b'"}'

    refused(shop.report(content=chunks(), headers={"content-type": "application/json"}), 413)


def test_chunked_body_without_length_under_the_limit_is_read(shop: Shop) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        text = json.dumps(GOOD).encode()
        for i in range(0, len(text), 7):
            yield text[i : i + 7]

    response = shop.report(content=chunks(), headers={"content-type": "application/json"})
    assert stored(shop, response).twclid == GOOD["twclid"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                     "application/jsonx", None]
)
def test_wrong_content_type(shop: Shop, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = shop.report(content=json.dumps(GOOD), headers=headers)
    assert response.status_code in (400, 415)
    assert attribution_cookie(response) is None


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method(shop: Shop, method: str) -> None:
    response = shop.request(method, shop.engine.settings.attribution_path,
                            headers={"origin": "http://shop.test"})
    refused(response, 405)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://shop.test.evil.example",
        "http://evil.example@shop.test.attacker",
        "null",
        "http://shop.test:8443",
        "javascript:alert(1)",
    ],
)
def test_foreign_origin(shop: Shop, origin: str) -> None:
    refused(shop.report(GOOD, origin=origin), 403)


def test_no_origin_and_no_referer(shop: Shop) -> None:
    refused(shop.report(GOOD, origin=None), 403)


def test_foreign_referer_without_origin(shop: Shop) -> None:
    response = shop.report(GOOD, origin=None, headers={"referer": "https://evil.example/x"})
    refused(response, 403)


def test_landing_url_with_credentials_is_stripped(shop: Shop) -> None:
    body = {**GOOD, "landingUrl": "https://admin:hunter2@shop.test/pricing?utm_source=x&email=a@b.c"}
    attribution = stored(shop, shop.report(body))
    assert attribution.landing_url == "https://shop.test/pricing?utm_source=x"


@pytest.mark.parametrize(
    "url", ["javascript:alert(document.cookie)", "data:text/html,<script>x</script>",
            "file:///etc/passwd", "//evil.example/x", "https://", "http://[::1"]
)
def test_unusable_landing_url_keeps_no_url(shop: Shop, url: str) -> None:
    response = shop.report({**GOOD, "landingUrl": url})
    if response.status_code == 400:
        refused(response, 400)
    else:
        assert stored(shop, response).landing_url is None


def test_landing_url_of_10_kib(shop: Shop) -> None:
    body = {**GOOD, "landingUrl": "https://shop.test/" + "p/" * 5120}
    refused(shop.report(body), 413)


def test_landing_url_just_under_the_body_limit_is_cut_to_1024(shop: Shop) -> None:
    body = {**GOOD, "landingUrl": "https://shop.test/" + "seg/" * 1800}
    attribution = stored(shop, shop.report(body))
    assert attribution.landing_url is not None and len(attribution.landing_url) <= 1024


def test_browser_cannot_choose_pixel_or_endpoint(shop: Shop) -> None:
    body = {**GOOD, "pixelId": "evil1", "endpoint": "https://evil.example", "token": "x"}
    response = shop.report(body)
    assert response.status_code in (204, 400)
    assert shop.engine.settings.pixel_id == "o1a2b"
    assert shop.engine.settings.api_base_url.startswith("http://127.0.0.1:")


def test_lone_surrogates_in_every_field(shop: Shop) -> None:
    body = (b'{"twclid": "abc\\ud800", "landingUrl": "https://shop.test/\\udfff",'
            b' "consent": {"adStorage": "\\ud800granted"}}')
    refused(shop.report(content=body, headers={"content-type": "application/json"}), 400)


def test_lone_surrogate_only_in_the_landing_url(shop: Shop) -> None:
    body = b'{"twclid": "29q0w6g2k2m4a", "landingUrl": "https://shop.test/\\ud800x"}'
    response = shop.report(content=body, headers={"content-type": "application/json"})
    if response.status_code == 400:
        refused(response, 400)
    else:
        assert stored(shop, response).landing_url in (None, "https://shop.test/%ED%A0%80x")
