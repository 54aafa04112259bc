"""examples/flask_shop: the whole story over real HTTP against the fake X."""

from __future__ import annotations

import httpx
from tracklayer_flask import get_engine

from examples.flask_shop.app import create_app
from tests.integrations.shop_story import EMAIL, TWCLID, assert_purchase_matches_pixel
from tracklayer_middleware.testing import FakeXConversionsAPI


def test_landing_lead_and_purchase_reach_x(fake_x: FakeXConversionsAPI) -> None:
    app = create_app({"TRACKLAYER": {"api_base_url": fake_x.base_url, "outbox": "memory",
                                     "environment": "production"}})
    engine = get_engine(app)
    transport = httpx.WSGITransport(app=app)
    with httpx.Client(transport=transport, base_url="http://shop.test") as shop:
        landing = shop.get(f"/pricing?twclid={TWCLID}&utm_source=x")
        assert "session-attribution" in landing.text  # the landing script is on the page
        assert "HttpOnly" in landing.headers["set-cookie"]
        assert shop.get("/").status_code == shop.get("/lead").status_code == 200
        assert "Checkout: Pro ($129.95)" in shop.get("/checkout?plan=pro").text
        assert shop.post("/lead", data={"email": EMAIL}).status_code == 200
        thank_you = shop.post("/checkout", data={"plan": "pro", "email": EMAIL})
    assert thank_you.status_code == 200
    assert engine.flush(10)
    assert_purchase_matches_pixel(fake_x, thank_you.text)
    assert len(fake_x.accepted) == 2  # the lead and the purchase, once each
    engine.close(timeout=1)
