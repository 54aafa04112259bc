"""Hostile ``?twclid=`` values on a landing: the page is served and nothing is stored.

"Store nothing rather than inventing a click ID": a value X could not have put in the URL
sets no cookie and gives the view no attribution.
"""

from __future__ import annotations

import pytest

from tests.adversarial.conftest import Shop, attribution_cookie

pytestmark = pytest.mark.adversarial_input


def landed(shop: Shop, query: str) -> str | None:
    """Land with ``query``; return the twclid stored in the cookie (None: no cookie)."""
    response = shop.get(f"/pricing?{query}")
    assert response.status_code == 200
    value = attribution_cookie(response)
    if value is None:
        return None
    stored = shop.engine.codec.loads_cookie(value)
    assert stored is not None
    return stored.twclid


def test_valid_twclid_is_stored_control_case(shop: Shop) -> None:
    assert landed(shop, "twclid=29q0w6g2k2m4a&utm_source=x") == "29q0w6g2k2m4a"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("twclid=" + "a" * 129, id="too-long"),
        pytest.param("twclid=abc%00def", id="nul"),
        pytest.param("twclid=abc%0d%0aSet-Cookie:%20x=1", id="crlf"),
        pytest.param("twclid=abc%09def", id="tab"),
        pytest.param("twclid=caf%C3%A9", id="unicode-latin"),
        pytest.param("twclid=%EF%BD%81%EF%BD%82%EF%BD%83", id="unicode-fullwidth"),
        pytest.param("twclid=abc%E2%80%8B", id="zero-width-space"),
        pytest.param("twclid=%FF%FE", id="invalid-utf8"),
        pytest.param("twclid='%20OR%201=1--", id="sql"),
        pytest.param("twclid=1;DROP%20TABLE%20outbox", id="sql-drop"),
        pytest.param("twclid=%3Cscript%3Ealert(1)%3C/script%3E", id="html"),
        pytest.param("twclid=../../etc/passwd", id="path"),
        pytest.param("twclid=", id="empty"),
        pytest.param("twclid", id="no-value"),
        pytest.param("twclid=abc.def", id="dot-token-shape"),
    ],
)
def test_invalid_twclid_stores_nothing(shop: Shop, query: str) -> None:
    assert landed(shop, query) is None


def test_repeated_twclid_param_with_different_values(shop: Shop) -> None:
    assert landed(shop, "twclid=firstclick&twclid=secondclick") in (None, "firstclick",
                                                                   "secondclick")


def test_repeated_twclid_param_with_the_same_value(shop: Shop) -> None:
    assert landed(shop, "twclid=sameclick&twclid=sameclick") in (None, "sameclick")


def test_twclid_hidden_in_another_param_name(shop: Shop) -> None:
    assert landed(shop, "xtwclid=abc&twclid_=def&TWCLID=ghi") is None


def test_huge_query_string(shop: Shop) -> None:
    assert landed(shop, "utm_source=" + "x" * 60_000 + "&twclid=bigquery1") in (None, "bigquery1")
