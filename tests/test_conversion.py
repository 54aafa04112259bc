"""build_conversion(): validation, hashing, consent, X payload, Pixel twin and outbox record."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tracklayer_middleware.attribution import Attribution, AttributionCodec
from tracklayer_middleware.consent import Consent
from tracklayer_middleware.conversion import (
    Content,
    Conversion,
    build_conversion,
    format_x_time,
    parse_x_time,
)
from tracklayer_middleware.errors import ConversionError, TrackLayerError
from tracklayer_middleware.settings import TrackLayerSettings

NOW = datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc)
EMAIL_HASH = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
PHONE_HASH = "1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"
GUIDE_EVENTS = {
    "page_view": {"eventId": "o87ne", "label": "PageView"},
    "lead": {"eventId": "o87nf", "label": "Lead"},
    "purchase": {"eventId": "o87ni", "label": "Purchase"},
}


def make_settings(**overrides: Any) -> TrackLayerSettings:
    return TrackLayerSettings.from_mapping(
        {"pixelId": "o1a2b", "secretKey": "s" * 32, "xEventMap": GUIDE_EVENTS}, **overrides
    )


SETTINGS = make_settings()


def convert(event: str = "purchase", **fields: Any) -> Conversion:
    fields.setdefault("conversion_id", "ord_10492_purchase")
    fields.setdefault("now", NOW)
    fields.setdefault("email", "test@example.com")
    settings = fields.pop("settings", SETTINGS)
    return build_conversion(settings, event, **fields)


def guide_conversion(settings: TrackLayerSettings = SETTINGS) -> Conversion:
    click = Attribution.capture("29q0w6g2k2m4a", now=NOW - timedelta(days=1))
    return build_conversion(
        settings,
        "purchase",
        conversion_id="ord_10492_purchase",
        value=129.95,
        currency="USD",
        description="TrackLayer purchase",
        email="  Test@Example.COM ",
        external_id="cust_10492",
        attribution=click,
        now=NOW,
    )


# ---------------------------------------------------------------- the guide's payload
def test_guide_payload_field_by_field() -> None:
    body = guide_conversion().to_x(send_external_id=True)
    assert body == {
        "conversion_time": "2026-04-24T09:42:13.000Z",
        "event_id": "o87ni",
        "conversion_id": "ord_10492_purchase",
        "value": 129.95,
        "price_currency": "USD",
        "description": "TrackLayer purchase",
        "identifiers": [
            {"twclid": "29q0w6g2k2m4a"},
            {"hashed_email": EMAIL_HASH},
            {"external_id": "cust_10492"},
        ],
    }
    assert list(body) == [
        "conversion_time", "event_id", "conversion_id", "value", "price_currency",
        "description", "identifiers",
    ]
    assert '"value": 129.95' in json.dumps(body)


def test_external_id_is_not_sent_by_default() -> None:
    identifiers = guide_conversion().to_x()["identifiers"]
    assert {"external_id": "cust_10492"} not in identifiers
    assert guide_conversion().external_id == "cust_10492"  # still kept for reconciliation


def test_all_identifiers_and_device_pair_in_one_object() -> None:
    conversion = convert(
        phone="+1 (123) 456-7890",
        ip_address=" 203.0.113.9 ",
        user_agent="Mozilla/5.0",
        attribution="29q0w6g2k2m4a",
    )
    assert conversion.to_x()["identifiers"] == [
        {"twclid": "29q0w6g2k2m4a"},
        {"hashed_email": EMAIL_HASH},
        {"hashed_phone_number": PHONE_HASH},
        {"ip_address": "203.0.113.9", "user_agent": "Mozilla/5.0"},
    ]
    assert conversion.identifier_names() == [
        "twclid", "hashed_email", "hashed_phone", "ip_address", "user_agent",
    ]


def test_optional_fields_and_contents_in_payload() -> None:
    mug = {"content_id": "sku-1", "content_name": "Mug ☕", "content_price": 5.25, "num_items": 2}
    conversion = convert(
        value=Decimal("10.50"),
        number_items=2,
        contents=[mug, Content(content_id="sku-2", content_type="gift")],
    )
    body = conversion.to_x()
    assert body["value"] == 10.5
    assert body["price_currency"] == "USD"  # default_currency when value is given
    assert body["number_items"] == 2
    assert body["contents"] == [mug, {"content_id": "sku-2", "content_type": "gift"}]


def test_no_value_no_currency() -> None:
    body = convert(event="lead").to_x()
    assert "value" not in body
    assert "price_currency" not in body
    assert body["event_id"] == "o87nf"


def test_default_currency_setting_is_used() -> None:
    assert convert(value=1, settings=make_settings(default_currency="EUR")).currency == "EUR"


# ---------------------------------------------------------------- time
def test_conversion_time_is_frozen_to_now_in_utc_millis() -> None:
    conversion = convert(now=NOW + timedelta(microseconds=123_999))
    assert conversion.conversion_time == NOW + timedelta(milliseconds=123)
    assert format_x_time(conversion.conversion_time) == "2026-04-24T09:42:13.123Z"


def test_given_aware_time_is_converted_to_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    original = datetime(2026, 4, 24, 18, 0, 0, tzinfo=tokyo)
    conversion = convert(conversion_time=original)
    assert conversion.to_x()["conversion_time"] == "2026-04-24T09:00:00.000Z"


def test_real_clock_is_used_without_now() -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    conversion = build_conversion(SETTINGS, "lead", conversion_id="x", email="a@b.c")
    assert conversion.conversion_time >= before


def test_naive_datetime_is_refused_with_the_fix() -> None:
    with pytest.raises(ConversionError, match="timezone-aware") as info:
        convert(conversion_time=datetime(2026, 4, 24, 9, 0))
    assert info.value.field == "conversion_time"
    with pytest.raises(ConversionError, match="timezone-aware"):
        convert(now=datetime(2026, 4, 24, 9, 0))


def test_future_beyond_skew_is_refused() -> None:
    assert convert(conversion_time=NOW + timedelta(minutes=5)).conversion_time > NOW
    with pytest.raises(ConversionError, match="in the future") as info:
        convert(conversion_time=NOW + timedelta(minutes=5, seconds=1))
    assert info.value.field == "conversion_time"


def test_old_conversion_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tracklayer.conversion"):
        conversion = convert(conversion_time=NOW - timedelta(days=8))
    assert conversion.initial_state == "pending"
    assert "more than 7 days old" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tracklayer.conversion"):
        convert(conversion_time=NOW - timedelta(days=6))
    assert caplog.text == ""


def test_time_format_round_trip() -> None:
    assert parse_x_time("2026-04-24T09:42:13.000Z") == NOW


# ---------------------------------------------------------------- validation
def test_unknown_event_lists_known_ones() -> None:
    with pytest.raises(ConversionError, match="lead, page_view, purchase") as info:
        convert(event="purchse")
    assert info.value.field == "event"
    empty = TrackLayerSettings(pixel_id="o1a2b", secret_key="s" * 32)
    with pytest.raises(ConversionError, match="none configured"):
        convert(settings=empty)


@pytest.mark.parametrize(
    ("conversion_id", "message"),
    [
        ("", "required"),
        ("   ", "required"),
        (None, "required"),
        (42, "required"),
        ("x" * 257, "more than 256"),
        ("ord\n1", "control characters"),
        (" ord_1", "leading/trailing"),
    ],
)
def test_bad_conversion_id(conversion_id: object, message: str) -> None:
    with pytest.raises(ConversionError, match=message) as info:
        convert(conversion_id=conversion_id)
    assert info.value.field == "conversion_id"


def test_conversion_id_edges_accepted() -> None:
    assert convert(conversion_id="x" * 256).conversion_id == "x" * 256
    assert convert(conversion_id="ordre n°1 🎉").conversion_id == "ordre n°1 🎉"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"value": math.nan}, "value", "finite"),
        ({"value": math.inf}, "value", "finite"),
        ({"value": -0.01}, "value", ">= 0"),
        ({"value": "129.95"}, "value", "must be a number"),
        ({"value": True}, "value", "must be a number"),
        ({"currency": "usd"}, "currency", "ISO-4217"),
        ({"currency": "XYZ"}, "currency", "ISO-4217"),
        ({"currency": "US"}, "currency", "ISO-4217"),
        ({"number_items": 0}, "number_items", "> 0"),
        ({"number_items": 1.5}, "number_items", "> 0"),
        ({"number_items": True}, "number_items", "> 0"),
        ({"description": "x" * 1001}, "description", "more than 1000"),
        ({"description": "a\x00b"}, "description", "control"),
        ({"description": ""}, "description", "non-empty"),
        ({"external_id": "x" * 257}, "external_id", "more than 256"),
        ({"user_agent": "x\x07"}, "user_agent", "control"),
        ({"ip_address": "999.1.1.1"}, "ip_address", "IPv4 or IPv6"),
        ({"email": "nope"}, "email", "'@'"),
        ({"phone": "12345"}, "phone", "phone_default_region"),
        ({"attribution": "bad twclid!"}, "attribution", "valid twclid"),
        ({"attribution": 12}, "attribution", "not int"),
        ({"contents": "sku-1"}, "contents", "list of dicts"),
        ({"contents": {"content_id": "a"}}, "contents", "list of dicts"),
        ({"contents": [{"content_id": "a"}] * 501}, "contents", "more than X's 500"),
        ({"contents": [{"sku": "a"}]}, "contents", "unknown keys"),
        ({"contents": [{}]}, "contents", "empty"),
        ({"contents": ["sku"]}, "contents", "not str"),
        ({"contents": [{"content_price": -1}]}, "contents.content_price", ">= 0"),
        ({"contents": [{"content_id": "a", "num_items": 0}]}, "contents.num_items", "> 0"),
        ({"contents": [{"content_id": 5}]}, "contents.content_id", "string"),
        ({"conversion_time": "2026-04-24"}, "conversion_time", "datetime"),
    ],
)
def test_bad_fields_name_the_field(fields: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message) as info:
        convert(**fields)
    assert info.value.field == field
    assert isinstance(info.value, TrackLayerError)


def test_accepted_edges() -> None:
    conversion = convert(
        value=0,
        currency="JPY",
        description="🎉" * 1000,
        contents=[{"content_id": "a"}] * 500,
        ip_address="2001:DB8::1",
    )
    assert conversion.value == 0.0
    assert conversion.ip_address == "2001:db8::1"
    assert len(conversion.contents) == 500


def test_error_never_echoes_raw_pii() -> None:
    with pytest.raises(ConversionError) as info:
        convert(email="secret person@example.com")
    assert "secret" not in str(info.value)


# ---------------------------------------------------------------- state and consent
def test_pending_with_any_matching_identifier() -> None:
    assert convert().initial_state == "pending"
    assert convert(email=None, phone="+11234567890").initial_state == "pending"
    assert convert(email=None, attribution="abc").initial_state == "pending"


def test_no_identifier_is_kept_as_skipped() -> None:
    conversion = convert(email=None, external_id="cust_1", ip_address="1.2.3.4", user_agent="UA")
    assert conversion.initial_state == "skipped_no_identifier"
    assert conversion.identifier_names() == ["ip_address", "user_agent", "external_id"]
    assert convert(email=None).initial_state == "skipped_no_identifier"


def test_denied_consent_keeps_names_only() -> None:
    click = Attribution.capture("29q0w6g2k2m4a", consent=Consent(True, False), now=NOW)
    conversion = convert(
        phone="+11234567890", ip_address="1.2.3.4", user_agent="UA", attribution=click,
        external_id="cust_1",
    )
    assert conversion.initial_state == "skipped_consent"
    assert conversion.attribution_note == "consent_denied"
    assert conversion.twclid is None
    assert conversion.hashed_email is None
    assert conversion.hashed_phone is None
    assert conversion.ip_address is None
    assert conversion.user_agent is None
    assert conversion.identifier_names() == [
        "twclid", "hashed_email", "hashed_phone", "ip_address", "user_agent", "external_id",
    ]
    record = json.dumps(conversion.to_record())
    assert "29q0w6g2k2m4a" not in record
    assert EMAIL_HASH not in record
    assert PHONE_HASH not in record
    assert "1.2.3.4" not in record


def test_explicit_consent_wins_over_the_clicks() -> None:
    click = Attribution.capture("abc", consent=Consent(True, False), now=NOW)
    conversion = convert(attribution=click, consent=Consent(ad_user_data=True))
    assert conversion.initial_state == "pending"
    assert conversion.consent == Consent(True, True)
    assert convert(consent=Consent(ad_user_data=False)).initial_state == "skipped_consent"


def test_consent_required_treats_unknown_as_denied() -> None:
    strict = make_settings(consent_required=True)
    assert convert(settings=strict).initial_state == "skipped_consent"
    granted = convert(settings=strict, consent=Consent(ad_user_data=True))
    assert granted.initial_state == "pending"
    # A raw twclid means the caller asserts consent.
    assert convert(settings=strict, attribution="abc").initial_state == "pending"


# ---------------------------------------------------------------- attribution sources
def test_attribution_object_token_twclid_and_note() -> None:
    click = Attribution.capture("29q0w6g2k2m4a", now=NOW - timedelta(hours=1))
    token = AttributionCodec(SETTINGS).dumps_token(click)
    from_token = convert(attribution=token)
    assert (from_token.twclid, from_token.attribution_id) == (click.twclid, click.attribution_id)
    assert from_token.attribution_note == "token"
    assert convert(attribution=click).attribution_note == "attribution"
    assert convert(attribution=click, attribution_note="cookie").attribution_note == "cookie"
    raw = convert(attribution="29q0w6g2k2m4a")
    assert (raw.twclid, raw.attribution_id, raw.attribution_note) == (
        "29q0w6g2k2m4a", None, "twclid",
    )
    assert convert().attribution_note == "no_twclid"


@pytest.mark.parametrize("token", ["tampered.token.value", "x.y"])
def test_unreadable_token_keeps_the_conversion(token: str) -> None:
    conversion = convert(attribution=token)
    assert conversion.twclid is None
    assert conversion.initial_state == "pending"  # the email still matches
    assert conversion.attribution_note == "token_invalid_or_expired"


def test_expired_token_keeps_the_conversion() -> None:
    click = Attribution.capture("abc", now=NOW - timedelta(days=91))
    token = AttributionCodec(SETTINGS).dumps_token(click)
    assert convert(attribution=token).attribution_note == "token_invalid_or_expired"


# ---------------------------------------------------------------- pixel, record, repr
def test_pixel_event_shares_the_conversion_id() -> None:
    assert guide_conversion().pixel_event() == {
        "event_id": "tw-o1a2b-o87ni",
        "params": {"value": 129.95, "currency": "USD", "conversion_id": "ord_10492_purchase"},
    }
    assert convert(event="lead").pixel_event() == {
        "event_id": "tw-o1a2b-o87nf",
        "params": {"conversion_id": "ord_10492_purchase"},
    }


def test_pixel_event_with_full_form_event_id() -> None:
    settings = make_settings(xEventMap={"purchase": "tw-o1a2b-o87ni"})
    conversion = convert(settings=settings)
    assert conversion.pixel_event()["event_id"] == "tw-o1a2b-o87ni"
    assert conversion.to_x()["event_id"] == "tw-o1a2b-o87ni"


def test_record_round_trip_is_json_safe() -> None:
    conversion = convert(
        value=1.5,
        number_items=3,
        description="d",
        contents=[{"content_id": "a", "content_price": 2}],
        phone="+11234567890",
        ip_address="::1",
        user_agent="UA",
        external_id="c1",
        attribution=Attribution.capture("abc", consent=Consent(True, None), now=NOW),
        now=NOW + timedelta(microseconds=5000),
    )
    record = json.loads(json.dumps(conversion.to_record()))
    assert Conversion.from_record(record) == conversion
    assert "test@example.com" not in json.dumps(record)
    skipped = convert(email=None)
    assert Conversion.from_record(json.loads(json.dumps(skipped.to_record()))) == skipped


def test_from_record_refuses_unknown_versions() -> None:
    record = convert().to_record()
    record["v"] = 99
    with pytest.raises(ValueError, match="version"):
        Conversion.from_record(record)


def test_repr_shortens_hashes_and_hides_device_values() -> None:
    conversion = convert(
        phone="+11234567890", ip_address="203.0.113.9", user_agent="SecretUA/1",
        attribution="29q0w6g2k2m4a",
    )
    text = repr(conversion)
    assert EMAIL_HASH not in text
    assert PHONE_HASH not in text
    assert "hashed_email=973dfe46…" in text
    assert "twclid=29q0w6g2…" in text
    assert "203.0.113.9" not in text
    assert "SecretUA" not in text
    assert "ord_10492_purchase" in text
    assert "state=pending" in text


def test_out_of_range_numbers_and_times_are_conversion_errors() -> None:
    with pytest.raises(ConversionError, match="finite") as info:
        convert(value=10**400)
    assert info.value.field == "value"
    edge = datetime.min.replace(tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ConversionError, match="outside the calendar") as info:
        convert(conversion_time=edge)
    assert info.value.field == "conversion_time"


def test_time_format_pads_early_years() -> None:
    early = datetime(999, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
    assert format_x_time(early) == "0999-01-02T03:04:05.006Z"
    assert parse_x_time(format_x_time(early)) == early


def test_consent_may_be_the_guides_json_shape() -> None:
    conversion = convert(consent={"adStorage": "granted", "adUserData": "denied"})
    assert conversion.initial_state == "skipped_consent"
    assert conversion.consent == Consent(True, False)
    for bad in ({"adUserData": "maybe"}, 5, "granted"):
        with pytest.raises(ConversionError) as info:
            convert(consent=bad)
        assert info.value.field == "consent"
