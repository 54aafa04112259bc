"""Property tests over the pure core: codec, conversion payload, identity, landing URLs."""

from __future__ import annotations

import contextlib
import json
import re
import string
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracklayer_middleware.attribution import (
    MAX_COOKIE_VALUE_LENGTH,
    MAX_LANDING_URL_LENGTH,
    TWCLID_RE,
    Attribution,
    AttributionCodec,
    sanitize_landing_url,
)
from tracklayer_middleware.consent import Consent
from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.currency import ISO_4217
from tracklayer_middleware.errors import ConversionError, TrackLayerError
from tracklayer_middleware.identity import (
    hash_email,
    hash_phone,
    is_sha256_hex,
    normalize_email,
    normalize_phone,
)
from tracklayer_middleware.settings import TrackLayerSettings

SETTINGS = TrackLayerSettings.from_mapping(
    {
        "pixelId": "o1a2b",
        "secretKey": "s" * 32,
        "xEventMap": {"purchase": "o87ni", "lead": "o87nf"},
        "phoneDefaultRegion": "US",
    }
)
CODEC = AttributionCodec(SETTINGS)
NOW = datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc)
X_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
COOKIE_ALPHABET = string.ascii_letters + string.digits + "-_."
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

signals = st.sampled_from([True, False, None])
consents = st.builds(Consent, signals, signals)
twclids = st.from_regex(TWCLID_RE, fullmatch=True)
landing_urls = st.one_of(
    st.none(),
    st.builds(
        lambda scheme, path, query: f"{scheme}://shop.example.com/{path}?{query}",
        st.sampled_from(["http", "https", "HTTPS"]),
        st.text(max_size=200),
        st.text(max_size=200),
    ),
    st.text(max_size=300),
)
attributions = st.builds(
    lambda twclid, url, consent, seconds: Attribution.capture(
        twclid, url, consent, NOW - timedelta(seconds=seconds)
    ),
    twclids,
    landing_urls,
    consents,
    st.integers(min_value=0, max_value=SETTINGS.cookie_max_age),
)


# ---------------------------------------------------------------- codec
@FAST
@given(attributions)
def test_codec_round_trips_within_4kb(attribution: Attribution) -> None:
    for dumps, loads in (
        (CODEC.dumps_cookie, CODEC.loads_cookie),
        (CODEC.dumps_token, CODEC.loads_token),
    ):
        value = dumps(attribution)
        assert len(value) <= MAX_COOKIE_VALUE_LENGTH
        assert set(value) <= set(COOKIE_ALPHABET)
        assert loads(value, now=NOW) == attribution


@FAST
@given(attributions, st.data())
def test_codec_rejects_every_single_character_mutation(
    attribution: Attribution, data: st.DataObject
) -> None:
    value = CODEC.dumps_cookie(attribution)
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    kind = data.draw(st.sampled_from(["replace", "delete", "insert"]))
    char = data.draw(st.sampled_from(COOKIE_ALPHABET).filter(lambda c: c != value[position]))
    if kind == "replace":
        mutated = value[:position] + char + value[position + 1 :]
    elif kind == "delete":
        mutated = value[:position] + value[position + 1 :]
    else:
        mutated = value[:position] + char + value[position:]
    assert CODEC.loads_cookie(mutated, now=NOW) is None
    assert CODEC.loads_token(mutated, now=NOW) is None


@FAST
@given(st.text(max_size=300))
def test_codec_never_raises_on_junk(value: str) -> None:
    assert CODEC.loads_cookie(value, now=NOW) is None


# ---------------------------------------------------------------- landing URL
@FAST
@given(landing_urls)
def test_sanitized_url_is_short_http_and_stable(url: str | None) -> None:
    result = sanitize_landing_url(url)
    if result is None:
        return
    assert len(result) <= MAX_LANDING_URL_LENGTH
    assert result.startswith(("http://", "https://"))
    assert result.isascii()
    assert "#" not in result and "@" not in result.split("/")[2]
    assert sanitize_landing_url(result) == result


# ---------------------------------------------------------------- identity
@FAST
@given(st.emails())
def test_email_normalization_is_idempotent(email: str) -> None:
    once = normalize_email(email)
    assert normalize_email(once) == once
    digest = hash_email(email)
    assert is_sha256_hex(digest)
    assert hash_email(digest) == digest
    assert hash_email(f"  {email.upper()} ") == hash_email(email.lower()) or not email.isascii()


@FAST
@given(st.text(max_size=80))
def test_identity_raises_only_conversion_errors(raw: str) -> None:
    for fn in (hash_email, lambda v: hash_phone(v, "US")):
        with contextlib.suppress(ConversionError):
            assert is_sha256_hex(fn(raw))


@FAST
@given(
    st.one_of(
        st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
        st.from_regex(r"\(?[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}", fullmatch=True),
        st.text(alphabet="0123456789 -().+", max_size=25),
    )
)
def test_phone_normalization_is_idempotent(raw: str) -> None:
    try:
        once = normalize_phone(raw, "US")
    except ConversionError:
        return
    assert re.fullmatch(r"\+[1-9][0-9]{6,14}", once)
    assert normalize_phone(once, "US") == once
    assert normalize_phone(once) == once
    assert hash_phone(raw, "US") == hash_phone(once)


# ---------------------------------------------------------------- conversion
valid_fields = st.fixed_dictionaries(
    {
        "conversion_id": st.text(
            alphabet=st.characters(
                blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
            ),
            min_size=1,
            max_size=256,
        ),
    },
    optional={
        "conversion_time": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2026, 4, 24, 9, 40),
            timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7))]),
        ),
        "value": st.one_of(
            st.floats(min_value=0, max_value=1e12, allow_nan=False), st.integers(0, 10**9)
        ),
        "currency": st.sampled_from(sorted(ISO_4217)),
        "number_items": st.integers(min_value=1, max_value=10**6),
        "description": st.text(max_size=1000).filter(
            lambda t: t != "" and not any(ord(c) < 32 and c not in "\t\n\r" for c in t)
            and not any(0x7F <= ord(c) <= 0x9F for c in t)
        ),
        "contents": st.lists(
            st.fixed_dictionaries(
                {"content_id": st.text(string.ascii_letters, min_size=1, max_size=20)},
                optional={
                    "content_price": st.floats(min_value=0, max_value=1e6),
                    "num_items": st.integers(1, 100),
                },
            ),
            max_size=5,
        ),
        "email": st.emails(),
        "phone": st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
        "external_id": st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=40),
        "ip_address": st.ip_addresses().map(str),
        "user_agent": st.text(string.printable.strip(), min_size=1, max_size=100),
        "attribution": st.one_of(twclids, attributions),
        "consent": consents,
    },
)


@FAST
@given(st.sampled_from(["purchase", "lead"]), valid_fields)
def test_valid_conversions_give_sendable_json(event: str, fields: dict[str, Any]) -> None:
    conversion = build_conversion(SETTINGS, event, now=NOW, **fields)
    body = conversion.to_x(send_external_id=True)
    text = json.dumps({"conversions": [body]}, allow_nan=False)
    assert json.loads(text)["conversions"][0] == body
    assert X_TIME_RE.fullmatch(body["conversion_time"])
    assert body["event_id"] in ("o87ni", "o87nf")
    assert body["conversion_id"] == fields["conversion_id"]
    if conversion.initial_state == "pending":
        names = {key for item in body["identifiers"] for key in item}
        assert names & {"twclid", "hashed_email", "hashed_phone_number"}
    record = json.loads(json.dumps(conversion.to_record(), allow_nan=False))
    assert Conversion.from_record(record) == conversion
    for raw in (fields.get("email"), fields.get("phone")):
        if raw:
            assert raw not in text and raw not in json.dumps(record)


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.lists(st.dictionaries(st.text(max_size=12), st.integers() | st.text()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
FIELD_NAMES = [
    "conversion_id", "conversion_time", "value", "currency", "number_items", "description",
    "contents", "email", "phone", "external_id", "ip_address", "user_agent", "attribution",
    "consent",
]


@FAST
@given(junk, st.dictionaries(st.sampled_from(FIELD_NAMES), junk, max_size=5))
def test_junk_raises_only_trackLayer_errors(event: Any, fields: dict[str, Any]) -> None:
    fields.setdefault("conversion_id", "ord_1")
    try:
        conversion = build_conversion(SETTINGS, event, now=NOW, **fields)
    except TrackLayerError:
        return
    json.dumps(conversion.to_x(), allow_nan=False)


@settings(FAST, max_examples=400)
@given(st.sampled_from(FIELD_NAMES), junk)
def test_one_junk_field_raises_only_trackLayer_errors(name: str, value: Any) -> None:
    fields = {"conversion_id": "ord_1", "email": "a@b.co", name: value}
    try:
        conversion = build_conversion(SETTINGS, "purchase", now=NOW, **fields)
    except TrackLayerError as exc:
        assert isinstance(exc, ConversionError)
        assert exc.field is not None
        return
    json.dumps(conversion.to_x(), allow_nan=False)
