"""Hostile attribution cookies: the page is served (200) and the cookie is ignored.

A visitor (or an attacker) controls the Cookie header completely. Whatever it holds, the
request must never fail, and a forged click must never become attribution.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.adversarial.conftest import (
    OLD_SECRET_KEY,
    SECRET_KEY,
    Shop,
    attribution_cookie,
)
from tracklayer_middleware.attribution import Attribution, AttributionCodec
from tracklayer_middleware.consent import Consent

pytestmark = pytest.mark.adversarial_input

TWCLID = "29q0w6g2k2m4a"


def click(twclid: str = TWCLID, *, at: datetime | None = None) -> Attribution:
    granted = Consent(ad_storage=True, ad_user_data=True)
    return Attribution.capture(twclid, "https://shop.test/pricing?utm_source=x", granted, now=at)


def seen_twclid(shop: Shop, cookie_header: str | bytes) -> str | None:
    """What the view sees as the visitor's click when the browser sends ``cookie_header``."""
    response = shop.get("/whoami", headers={"cookie": cookie_header})
    assert response.status_code == 200
    twclid: str | None = response.json()["twclid"]
    return twclid


def test_valid_cookie_is_read_control_case(shop: Shop) -> None:
    """The control: an untouched cookie IS read, so the refusals below mean something."""
    value = shop.engine.codec.dumps_cookie(click())
    assert seen_twclid(shop, f"tl_attr={value}") == TWCLID


def test_tampered_cookie(shop: Shop) -> None:
    value = shop.engine.codec.dumps_cookie(click())
    payload, _, rest = value.partition(".")
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    assert seen_twclid(shop, f"tl_attr={flipped}.{rest}") is None


def test_forged_twclid_with_copied_signature(shop: Shop) -> None:
    genuine = shop.engine.codec.dumps_cookie(click("genuineclick"))
    forged = shop.engine.codec.dumps_cookie(click("forgedclick0"))
    mixed = forged.partition(".")[0] + "." + genuine.partition(".")[2]
    assert seen_twclid(shop, f"tl_attr={mixed}") is None


def test_truncated_cookie(shop: Shop) -> None:
    value = shop.engine.codec.dumps_cookie(click())
    assert seen_twclid(shop, f"tl_attr={value[:-10]}") is None


def test_resigned_with_old_key_after_its_rotation_was_removed(shop: Shop) -> None:
    settings = shop.engine.settings
    old = AttributionCodec(settings.replace(secret_key=OLD_SECRET_KEY))
    still_rotating = AttributionCodec(settings.replace(secret_key_fallbacks=(OLD_SECRET_KEY,)))
    value = old.dumps_cookie(click())
    assert still_rotating.loads_cookie(value) is not None  # accepted during the rotation
    assert settings.secret_key == SECRET_KEY and not settings.secret_key_fallbacks
    assert seen_twclid(shop, f"tl_attr={value}") is None


def test_expired_cookie(shop: Shop) -> None:
    max_age = shop.engine.settings.cookie_max_age
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=max_age + 60)
    value = shop.engine.codec.dumps_cookie(click(at=long_ago))
    assert seen_twclid(shop, f"tl_attr={value}") is None


def test_cookie_from_the_future(shop: Shop) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=2)
    value = shop.engine.codec.dumps_cookie(click(at=later))
    assert seen_twclid(shop, f"tl_attr={value}") is None


def test_oversized_cookie(shop: Shop) -> None:
    value = shop.engine.codec.dumps_cookie(click())
    assert seen_twclid(shop, f"tl_attr={value}{'A' * 8000}") is None


def test_wrong_salt_token_used_as_cookie(shop: Shop) -> None:
    token = shop.engine.codec.dumps_token(click())
    assert seen_twclid(shop, f"tl_attr={token}") is None


def test_non_utf8_cookie_bytes(shop: Shop) -> None:
    assert seen_twclid(shop, b"tl_attr=\xff\xfe\xc3\x28.\x80abc") is None


def test_nul_and_control_bytes_in_cookie(shop: Shop) -> None:
    value = shop.engine.codec.dumps_cookie(click())
    assert seen_twclid(shop, f"tl_attr={value[:20]}\x00\x1b{value[20:]}") is None


def test_duplicated_cookie_forged_first(shop: Shop) -> None:
    genuine = shop.engine.codec.dumps_cookie(click())
    header = f"tl_attr={genuine[:-4]}XXXX; tl_attr={genuine}"
    assert seen_twclid(shop, header) in (None, TWCLID)


def test_duplicated_cookie_two_valid_clicks(shop: Shop) -> None:
    first = shop.engine.codec.dumps_cookie(click("firstclick"))
    second = shop.engine.codec.dumps_cookie(click("secondclick"))
    assert seen_twclid(shop, f"tl_attr={first}; tl_attr={second}") in ("firstclick", "secondclick")


def test_cookie_of_another_site_with_our_name_prefix(shop: Shop) -> None:
    """A sibling app's ``tl_attr_v2`` or ``xtl_attr`` must not be mistaken for ours."""
    value = shop.engine.codec.dumps_cookie(click())
    assert seen_twclid(shop, f"tl_attr_v2={value}; xtl_attr={value}") is None


def test_garbage_cookie_header_syntax(shop: Shop) -> None:
    header = 'tl_attr; =; ;;; tl_attr=="; tl_attr=\\"x\\"; a=b=c'
    assert seen_twclid(shop, header) is None


def test_bad_cookie_with_a_fresh_click_sets_a_new_cookie(shop: Shop) -> None:
    """A broken cookie never blocks the new landing's cookie (last click wins)."""
    response = shop.get("/pricing?twclid=newclick1", headers={"cookie": "tl_attr=garbage.x.y"})
    assert response.status_code == 200
    value = attribution_cookie(response)
    assert value is not None
    decoded = shop.engine.codec.loads_cookie(value)
    assert decoded is not None and decoded.twclid == "newclick1"
