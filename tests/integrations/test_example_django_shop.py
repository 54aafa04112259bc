"""examples/django_shop: the story under ASGI (async checkout view), CSRF and all."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.integrations.shop_story import EMAIL, TWCLID, assert_purchase_matches_pixel
from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = pytest.mark.usefixtures("django_project")


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "the form has no CSRF token"
    return match.group(1)


@pytest.mark.anyio
async def test_landing_lead_and_purchase_reach_x(fake_x: FakeXConversionsAPI) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from tracklayer_django import get_engine

    transport = httpx.ASGITransport(app=ASGIHandler())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as shop:
        landing = await shop.get(f"/shop/pricing/?twclid={TWCLID}&utm_source=x")
        assert "session-attribution" in landing.text
        assert "HttpOnly" in landing.headers["set-cookie"]
        assert (await shop.get("/shop/")).status_code == 200
        form = await shop.get("/shop/lead/")
        lead = await shop.post("/shop/lead/", data={"email": EMAIL,
                                                     "csrfmiddlewaretoken": csrf_token(form.text)})
        assert lead.status_code == 200
        form = await shop.get("/shop/checkout/?plan=pro")
        thank_you = await shop.post("/shop/checkout/", data={
            "plan": "pro", "email": EMAIL, "csrfmiddlewaretoken": csrf_token(form.text)})
    assert thank_you.status_code == 200
    assert get_engine().flush(10)
    assert_purchase_matches_pixel(fake_x, thank_you.text)
    assert len(fake_x.accepted) == 2
