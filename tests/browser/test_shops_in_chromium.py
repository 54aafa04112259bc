"""The browser half in a real chromium: landing script, HttpOnly cookie, Pixel dedup twin.

Run against the Flask shop (with and without ``consent_required``) and the Django shop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Shop, shop_page
from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = pytest.mark.browser
TWCLID = "29q0w6g2k2m4a"
ATTRIBUTION_PATH = "/api/tracklayer/session-attribution"


@pytest.fixture
def page(browser: Any, shop: Shop) -> Iterator[Any]:
    """A browser tab that can reach the shop and nothing else."""
    with shop_page(browser, shop.url) as tab:
        yield tab


@pytest.mark.parametrize(
    "shop",
    [("flask", {}), ("flask", {"consent_required": True}), ("django", {})],
    ids=["flask", "flask-consent-required", "django"],
    indirect=True,
)
def test_ad_click_to_purchase_dedups_pixel_and_server(
    page: Any, shop: Shop, fake_x: FakeXConversionsAPI
) -> None:
    # 1. Landing from an X ad: the landing script reports the click with the CMP's consent.
    with page.expect_response(lambda r: r.url.endswith(ATTRIBUTION_PATH)) as report:
        page.goto(shop.page(f"pricing?twclid={TWCLID}&utm_source=x"))
    assert report.value.status == 204
    assert report.value.request.post_data_json["consent"] == {
        "adStorage": "granted", "adUserData": "granted"}

    # 2. The signed cookie is there, HttpOnly: page scripts cannot read it.
    [cookie] = [c for c in page.context.cookies() if c["name"] == "tl_attr"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert "tl_attr" not in page.evaluate("document.cookie")

    # 3. Checkout: the thank-you page fires the Pixel event with the server's conversion_id.
    page.click("#buy-pro")
    page.fill("input[name=email]", "  Test@Example.COM ")
    page.click("#pay")
    page.wait_for_selector("#thanks")
    events = [call for call in page.evaluate("window.__twq") if call[0] == "event"]
    [(_, event_id, params)] = events
    assert event_id == "tw-o1a2b-o87ni"
    assert params["value"] == 129.95 and params["currency"] == "USD"

    # 4. X receives the same conversion_id from the server, with the click id: counted once.
    assert shop.engine.flush(10)
    assert fake_x.accepted_ids() == {params["conversion_id"]: 1}
    assert {"twclid": TWCLID} in fake_x.accepted[0]["identifiers"]


def test_plain_visit_reports_nothing_and_sets_no_cookie(page: Any, shop: Shop) -> None:
    reports: list[str] = []
    page.on("request", lambda r: reports.append(r.url) if ATTRIBUTION_PATH in r.url else None)
    page.goto(shop.page("pricing"))
    page.wait_for_load_state("networkidle")
    assert reports == []
    assert page.context.cookies() == []


@pytest.mark.parametrize("shop", [("flask", {"consent_required": True})], indirect=True)
def test_cmp_denial_clears_the_cookie_and_silences_pixel_and_server(
    page: Any, shop: Shop, fake_x: FakeXConversionsAPI
) -> None:
    # The site's CMP says no: the page's own `window.tracklayerConsent = ...` is overridden.
    page.add_init_script(
        "Object.defineProperty(window, 'tracklayerConsent', {configurable: false,"
        " get: () => ({adStorage: 'denied', adUserData: 'denied'}), set: () => {}});"
    )
    with page.expect_response(lambda r: r.url.endswith(ATTRIBUTION_PATH)) as report:
        page.goto(shop.page(f"pricing?twclid={TWCLID}"))
    assert report.value.status == 204
    assert [c for c in page.context.cookies() if c["name"] == "tl_attr"] == []

    page.goto(shop.page("checkout?plan=pro"))
    page.fill("input[name=email]", "buyer@example.com")
    page.click("#pay")
    page.wait_for_selector("#thanks")
    assert [call for call in page.evaluate("window.__twq") if call[0] == "event"] == []
    assert shop.engine.flush(10)
    assert fake_x.requests == []
