"""examples/fastapi_shop: the whole story; the lifespan delivers before shutdown ends."""

from __future__ import annotations

from starlette.testclient import TestClient

from examples.fastapi_shop.app import create_app
from tests.integrations.shop_story import EMAIL, TWCLID, assert_purchase_matches_pixel
from tracklayer_middleware.testing import FakeXConversionsAPI


def test_landing_lead_and_purchase_reach_x_by_shutdown(fake_x: FakeXConversionsAPI) -> None:
    app = create_app({"api_base_url": fake_x.base_url, "outbox": "memory",
                      "environment": "production"})
    with TestClient(app, base_url="http://shop.test") as shop:
        landing = shop.get(f"/pricing?twclid={TWCLID}&utm_source=x")
        assert "session-attribution" in landing.text
        assert "HttpOnly" in landing.headers["set-cookie"]
        assert "Pro: $129.95" in shop.get("/checkout?plan=pro").text
        assert shop.get("/lead").status_code == 200
        assert shop.post("/lead", data={"email": EMAIL}).status_code == 200
        thank_you = shop.post("/checkout", data={"plan": "pro", "email": EMAIL})
        assert thank_you.status_code == 200
    # No flush() here: the lifespan's shutdown delivered what was queued.
    assert_purchase_matches_pixel(fake_x, thank_you.text)
    assert len(fake_x.accepted) == 2


def test_unknown_plan_is_a_404_and_converts_nothing(fake_x: FakeXConversionsAPI) -> None:
    app = create_app({"api_base_url": fake_x.base_url, "outbox": "memory",
                      "environment": "production"})
    with TestClient(app) as shop:
        assert shop.post("/checkout", data={"plan": "gold", "email": EMAIL}).status_code == 404
    assert fake_x.requests == []
