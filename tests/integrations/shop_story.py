"""The example shops' shared story, checked the same way for every framework."""

from __future__ import annotations

import re

from tracklayer_middleware.testing import FakeXConversionsAPI

TWCLID = "29q0w6g2k2m4a"
HASHED_EMAIL = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
EMAIL = "  Test@Example.COM "
_PIXEL_CALL = re.compile(r"twq\('event', \"(tw-o1a2b-\w+)\", (\{[^}]*\})\);")


def pixel_calls(html: str) -> list[tuple[str, str]]:
    """``(event_id, params JSON)`` of every ``twq('event', ...)`` TrackLayer rendered."""
    return _PIXEL_CALL.findall(html)


def assert_purchase_matches_pixel(fake_x: FakeXConversionsAPI, thank_you_html: str) -> None:
    """X got one purchase with twclid + hashed email, and the page's Pixel call has its id."""
    [(event_id, params)] = pixel_calls(thank_you_html)
    assert event_id == "tw-o1a2b-o87ni"
    [sent] = [c for c in fake_x.accepted if c["event_id"] == "o87ni"]
    assert f'"conversion_id":"{sent["conversion_id"]}"' in params
    assert re.fullmatch(r"ord_\d+_purchase", sent["conversion_id"])
    assert {"twclid": TWCLID} in sent["identifiers"]
    assert {"hashed_email": HASHED_EMAIL} in sent["identifiers"]
    assert sent["price_currency"] == "USD" and sent["value"] > 0
