"""Bad ``convert()`` calls: refused at the call with a ``ConversionError`` naming the field.

A programmer error must surface at once, in the view that made it, never later in the
sender; and no refusal may echo a raw email or phone number back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tests.adversarial.conftest import Observed
from tracklayer_middleware.conversion import Conversion
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.errors import ConversionError

pytestmark = pytest.mark.adversarial_input

Convert = Callable[..., Any]


@pytest.fixture
def convert(engine: TrackLayer, observed: Observed) -> Convert:
    """``tracklayer.convert()`` on a real engine; a refusal must leave the outbox empty."""

    def call(event: str = "purchase", **fields: Any) -> Any:
        fields.setdefault("conversion_id", "ord_1_purchase")
        fields.setdefault("attribution", "29q0w6g2k2m4a")
        outcome = observed.calls(engine.convert, event, **fields)
        if isinstance(outcome, ConversionError):
            assert not any(engine.stats()["by_state"].values()), "a refused call stored a row"
        return outcome

    return call


def refused(outcome: object, field: str) -> ConversionError:
    assert isinstance(outcome, ConversionError), f"accepted: {outcome!r}"
    assert outcome.field == field, (outcome.field, str(outcome))
    return outcome


def test_unknown_event_lists_the_known_ones(convert: Convert) -> None:
    error = refused(convert("purchse"), "event")
    assert "purchase" in str(error) and "lead" in str(error)


def test_event_name_not_a_string(convert: Convert) -> None:
    refused(convert(None), "event")


def test_naive_datetime(convert: Convert) -> None:
    refused(convert(conversion_time=datetime(2026, 4, 24, 9, 42, 13)), "conversion_time")


def test_far_future_datetime(convert: Convert) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=3650)
    refused(convert(conversion_time=later), "conversion_time")


def test_datetime_at_the_edge_of_the_calendar(convert: Convert) -> None:
    """datetime.min in UTC+1 is before year 1 in UTC: refuse it, do not overflow."""
    edge = datetime.min.replace(tzinfo=timezone(timedelta(hours=1)))
    outcome = convert(conversion_time=edge)
    assert isinstance(outcome, (Conversion, ConversionError))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, Decimal("NaN")])
def test_non_finite_value(convert: Convert, value: object) -> None:
    refused(convert(value=value, currency="USD"), "value")


def test_negative_value(convert: Convert) -> None:
    refused(convert(value=-129.95, currency="USD"), "value")


def test_value_too_large_for_a_double(convert: Convert) -> None:
    refused(convert(value=10**400, currency="USD"), "value")


@pytest.mark.parametrize("value", ["129.95", True, [129.95]])
def test_value_of_the_wrong_type(convert: Convert, value: object) -> None:
    refused(convert(value=value, currency="USD"), "value")


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", "ZZZ", "U\u0053D\u200b", 840])
def test_bad_currency(convert: Convert, currency: object) -> None:
    refused(convert(value=1.0, currency=currency), "currency")


def test_600_contents(convert: Convert) -> None:
    contents = [{"content_id": f"sku-{i}", "num_items": 1} for i in range(600)]
    refused(convert(contents=contents), "contents")


def test_contents_item_with_unknown_keys(convert: Convert) -> None:
    refused(convert(contents=[{"content_id": "sku-1", "__class__": "x"}]), "contents")


def test_emoji_in_description_is_accepted_as_is(convert: Convert) -> None:
    conversion = convert(description="Gift box \N{WRAPPED PRESENT}\N{PARTY POPPER} für Oma")
    assert isinstance(conversion, Conversion)
    assert conversion.to_x()["description"].endswith("\N{PARTY POPPER} für Oma")


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@", "@b.c", "x\x00@y.z", "user name@example.com", ""]
)
def test_garbage_email_refused_without_echoing_it(convert: Convert, email: str) -> None:
    error = refused(convert(email=email), "email")
    if len(email) > 3:
        assert email not in str(error)


@pytest.mark.parametrize("phone", ["call me", "+1", "+1" + "2" * 40, "+44\n7700900123", "++1555"])
def test_garbage_phone_refused_without_echoing_it(convert: Convert, phone: str) -> None:
    error = refused(convert(phone=phone), "phone")
    if len(phone) > 3:
        assert phone not in str(error)


@pytest.mark.parametrize("conversion_id", ["", "   ", "ord\r\nX-Evil: 1", "x" * 10_000, 42])
def test_bad_conversion_id(convert: Convert, conversion_id: object) -> None:
    refused(convert(conversion_id=conversion_id), "conversion_id")


def test_forged_twclid_as_attribution(convert: Convert) -> None:
    refused(convert(attribution="<script>alert(1)</script>"), "attribution")


@pytest.mark.parametrize("ip", ["999.1.1.1", "127.0.0.1\x00", "localhost"])
def test_bad_ip_address(convert: Convert, ip: str) -> None:
    refused(convert(ip_address=ip), "ip_address")


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("emial", "email"), ("conversion_tme", "conversion_time"), ("currancy", "currency")],
)
def test_misspelt_field_is_a_conversion_error_with_a_suggestion(
    convert: Convert, typo: str, meant: str
) -> None:
    error = refused(convert(**{typo: "x"}), typo)
    assert repr(meant) in str(error)


@pytest.mark.parametrize("field", ["user_agent", "external_id"])
@pytest.mark.parametrize("blank", [" ", "\u3000", "  \u00a0 "])
def test_blank_identifier_value_is_refused(convert: Convert, field: str, blank: str) -> None:
    """X refuses a blank identifier (failing the whole batch): refuse it at the call."""
    refused(convert(**{field: blank}), field)
