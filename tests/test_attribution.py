"""Attribution capture, landing-URL sanitizing and the signed cookie/token codec."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from itsdangerous import URLSafeTimedSerializer

from tracklayer_middleware import attribution as attribution_module
from tracklayer_middleware.attribution import (
    MAX_COOKIE_VALUE_LENGTH,
    MAX_LANDING_URL_LENGTH,
    VERIFIED_CACHE_SIZE,
    Attribution,
    AttributionCodec,
    sanitize_landing_url,
    valid_twclid,
)
from tracklayer_middleware.consent import Consent
from tracklayer_middleware.errors import ConversionError
from tracklayer_middleware.settings import TrackLayerSettings

NOW = datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc)
KEY = "k" * 32


def make_settings(**overrides: object) -> TrackLayerSettings:
    values: dict[str, object] = {"pixel_id": "o1a2b", "secret_key": KEY, **overrides}
    return TrackLayerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def codec() -> AttributionCodec:
    return AttributionCodec(make_settings())


@pytest.fixture
def attribution() -> Attribution:
    return Attribution.capture(
        "29q0w6g2k2m4a",
        "https://shop.example.com/pricing?twclid=29q0w6g2k2m4a&utm_source=x",
        Consent(ad_storage=True, ad_user_data=None),
        NOW,
    )


# ---------------------------------------------------------------- twclid
@pytest.mark.parametrize("value", ["29q0w6g2k2m4a", "A-b_9", "x" * 128])
def test_valid_twclid(value: str) -> None:
    assert valid_twclid(value)


@pytest.mark.parametrize("value", ["", "x" * 129, "a.b", "a b", "ü", None, 12, "a\n"])
def test_invalid_twclid(value: object) -> None:
    assert not valid_twclid(value)


# ---------------------------------------------------------------- landing URL
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://shop.example.com/pricing?twclid=29q&utm_source=x&utm_campaign=spring",
            "https://shop.example.com/pricing?utm_source=x&utm_campaign=spring",
        ),
        ("https://user:pass@Shop.Example.com:8443/a?b=1#frag", "https://shop.example.com:8443/a"),
        ("HTTP://example.com", "http://example.com/"),
        ("https://example.com/?email=a%40b.com&UTM_Medium=paid", "https://example.com/?UTM_Medium=paid"),
        ("https://example.com/café?utm_term=grüne tee", "https://example.com/caf%C3%A9?utm_term=gr%C3%BCne+tee"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://[::1]:8000/x", "https://[::1]:8000/x"),
        ("  https://example.com/a%20b  ", "https://example.com/a%20b"),
    ],
)
def test_sanitize_keeps_only_scheme_host_path_and_utm(url: str, expected: str) -> None:
    assert sanitize_landing_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>",
        "ftp://example.com/",
        "/relative/path",
        "https:///no-host",
        "https://example.com:99999/",
        "https://exa\nmple.com/",
        "",
        None,
        42,
    ],
)
def test_sanitize_rejects_unusable_urls(url: object) -> None:
    assert sanitize_landing_url(url) is None


def test_sanitize_drops_the_query_first_when_too_long() -> None:
    url = "https://example.com/pricing?utm_content=" + "x" * 2000
    assert sanitize_landing_url(url) == "https://example.com/pricing"


def test_sanitize_cuts_a_long_path_back_to_a_segment() -> None:
    url = "https://example.com/" + "/".join(["segment"] * 300)
    result = sanitize_landing_url(url)
    assert result is not None
    assert len(result) <= MAX_LANDING_URL_LENGTH
    assert result.endswith("/segment/")
    assert url.startswith(result)


def test_sanitize_is_idempotent_on_its_output() -> None:
    once = sanitize_landing_url("https://ex.com/ä b?utm_x=1 2&y=3")
    assert once is not None
    assert sanitize_landing_url(once) == once


# ---------------------------------------------------------------- Attribution
def test_capture_sanitizes_and_truncates_to_seconds() -> None:
    attribution = Attribution.capture(
        "abc", "https://example.com/?twclid=abc", now=NOW + timedelta(microseconds=999)
    )
    assert attribution.landing_url == "https://example.com/"
    assert attribution.captured_at == NOW
    assert attribution.consent == Consent()
    assert len(attribution.attribution_id) == 16
    other = Attribution.capture("abc", now=NOW)
    assert other.attribution_id != attribution.attribution_id
    assert other.landing_url is None


def test_capture_converts_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    attribution = Attribution.capture("abc", now=NOW.astimezone(paris))
    assert attribution.captured_at.tzinfo == timezone.utc
    assert attribution.captured_at == NOW


def test_attribution_validates_its_fields() -> None:
    with pytest.raises(ConversionError, match="twclid") as info:
        Attribution.capture("bad.twclid", now=NOW)
    assert info.value.field == "twclid"
    with pytest.raises(ConversionError, match="timezone-aware"):
        Attribution("abc", None, datetime(2026, 1, 1))
    with pytest.raises(ConversionError, match="timezone-aware"):
        Attribution.capture("abc", now=datetime(2026, 1, 1))
    with pytest.raises(ConversionError, match="attribution_id"):
        Attribution("abc", None, NOW, attribution_id="has space")


# ---------------------------------------------------------------- codec
def test_cookie_round_trip(codec: AttributionCodec, attribution: Attribution) -> None:
    value = codec.dumps_cookie(attribution)
    assert codec.loads_cookie(value, now=NOW) == attribution


def test_token_round_trip_and_contains_a_dot(
    codec: AttributionCodec, attribution: Attribution
) -> None:
    token = codec.dumps_token(attribution)
    assert "." in token
    assert codec.loads_token(token, now=NOW + timedelta(days=30)) == attribution


def test_cookie_and_token_salts_do_not_mix(
    codec: AttributionCodec, attribution: Attribution
) -> None:
    assert codec.loads_token(codec.dumps_cookie(attribution), now=NOW) is None
    assert codec.loads_cookie(codec.dumps_token(attribution), now=NOW) is None


def test_cookie_is_compact_and_url_safe(codec: AttributionCodec, attribution: Attribution) -> None:
    value = codec.dumps_cookie(attribution)
    assert len(value) < 256
    assert all(c.isalnum() or c in "-_." for c in value)


def test_worst_case_cookie_fits_in_4kb(codec: AttributionCodec) -> None:
    nasty_path = "".join(chr(0x4E00 + i) for i in range(2000))  # percent-encodes 9x
    quotes = '"' * 500
    attribution = Attribution(
        twclid="x" * 128,
        landing_url=f"https://{'h' * 60}.example.com/{nasty_path}?utm_a={quotes}",
        captured_at=NOW,
        consent=Consent(True, False),
        attribution_id="i" * 64,
    )
    value = codec.dumps_cookie(attribution)
    assert len(value) <= MAX_COOKIE_VALUE_LENGTH
    loaded = codec.loads_cookie(value, now=NOW)
    assert loaded is not None
    assert loaded.landing_url is not None
    assert len(loaded.landing_url) <= MAX_LANDING_URL_LENGTH


def test_refuses_to_produce_an_oversized_value(
    codec: AttributionCodec, attribution: Attribution, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribution_module, "MAX_COOKIE_VALUE_LENGTH", 20)
    with pytest.raises(ValueError, match="more than 20"):
        codec.dumps_cookie(attribution)


def test_max_age_counts_from_the_click(attribution: Attribution) -> None:
    codec = AttributionCodec(make_settings(cookie_max_age=3600))
    value = codec.dumps_cookie(attribution)
    assert codec.loads_cookie(value, now=NOW + timedelta(seconds=3600)) == attribution
    assert codec.loads_cookie(value, now=NOW + timedelta(seconds=3601)) is None


def test_click_far_in_the_future_is_refused(codec: AttributionCodec) -> None:
    future = Attribution.capture("abc", now=NOW + timedelta(minutes=6))
    present = Attribution.capture("abc", now=NOW + timedelta(minutes=4))
    assert codec.loads_cookie(codec.dumps_cookie(future), now=NOW) is None
    assert codec.loads_cookie(codec.dumps_cookie(present), now=NOW) == present


def test_key_rotation(attribution: Attribution) -> None:
    old = AttributionCodec(make_settings(secret_key="old" * 8))
    rotated = AttributionCodec(
        make_settings(secret_key="new" * 8, secret_key_fallbacks=("old" * 8,))
    )
    new_only = AttributionCodec(make_settings(secret_key="new" * 8))
    old_value = old.dumps_cookie(attribution)
    assert rotated.loads_cookie(old_value, now=NOW) == attribution
    assert new_only.loads_cookie(old_value, now=NOW) is None
    # The current key signs: a cookie minted after rotation verifies without the fallback.
    assert new_only.loads_cookie(rotated.dumps_cookie(attribution), now=NOW) == attribution
    assert old.loads_cookie(rotated.dumps_cookie(attribution), now=NOW) is None


@pytest.mark.parametrize(
    "value",
    ["", "garbage", "a.b.c", "\udcff\udcfe", "é" * 10, "x" * (MAX_COOKIE_VALUE_LENGTH + 1)],
)
def test_garbage_reads_as_none(codec: AttributionCodec, value: str) -> None:
    assert codec.loads_cookie(value, now=NOW) is None
    assert codec.loads_token(value, now=NOW) is None


def test_non_string_reads_as_none(codec: AttributionCodec) -> None:
    assert codec.loads_cookie(b"abc", now=NOW) is None  # type: ignore[arg-type]
    assert codec.loads_cookie(None, now=NOW) is None  # type: ignore[arg-type]


def _forge(payload: object) -> str:
    """A correctly signed cookie around an arbitrary payload (a bug or an old version)."""
    import hashlib

    serializer = URLSafeTimedSerializer(
        [KEY],
        salt="tracklayer.attribution.cookie",
        signer_kwargs={"digest_method": hashlib.sha256},
    )
    return serializer.dumps(payload)


GOOD = {"v": 1, "t": "abc", "c": int(NOW.timestamp()), "s": "gd", "i": "id1"}


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2],
        "text",
        {**GOOD, "v": 2},
        {**GOOD, "t": "bad twclid"},
        {**GOOD, "t": None},
        {**GOOD, "c": "yesterday"},
        {**GOOD, "c": True},
        {**GOOD, "c": 10**20},
        {**GOOD, "s": "gx"},
        {**GOOD, "s": "g"},
        {**GOOD, "i": ""},
        {**GOOD, "i": 5},
        {**GOOD, "u": "javascript:alert(1)"},
        {**GOOD, "u": "https://example.com/?email=a@b.c"},
        {**GOOD, "extra": 1},
        {k: v for k, v in GOOD.items() if k != "t"},
    ],
)
def test_signed_but_wrong_schema_reads_as_none(codec: AttributionCodec, payload: object) -> None:
    assert codec.loads_cookie(_forge(payload), now=NOW) is None


def test_forged_good_payload_is_read(codec: AttributionCodec) -> None:
    loaded = codec.loads_cookie(_forge(GOOD), now=NOW)
    assert loaded == Attribution("abc", None, NOW, Consent(True, False), "id1")


def test_problems_are_logged_at_debug_without_the_value(
    codec: AttributionCodec, attribution: Attribution, caplog: pytest.LogCaptureFixture
) -> None:
    value = codec.dumps_cookie(attribution)
    # A signature character whose 6 bits all count: the last one carries padding bits, and
    # a non-canonical last character is refused before the signature is even checked.
    tampered = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    with caplog.at_level(logging.DEBUG, logger="tracklayer.attribution"):
        assert codec.loads_cookie(tampered, now=NOW) is None
        assert codec.loads_cookie(value, now=NOW + timedelta(days=91)) is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "Signature" in caplog.records[0].getMessage()
    assert "max-age" in caplog.records[1].getMessage()
    for record in caplog.records:
        assert value[:20] not in record.getMessage()
        assert tampered[-20:] not in record.getMessage()


def test_loads_defaults_to_the_real_clock(codec: AttributionCodec) -> None:
    fresh = Attribution.capture("abc")
    assert codec.loads_cookie(codec.dumps_cookie(fresh)) == fresh
    assert codec.loads_cookie(codec.dumps_cookie(Attribution.capture("abc", now=NOW))) is None


def test_codec_repr_shows_no_key(codec: AttributionCodec) -> None:
    assert KEY not in repr(codec)


def test_every_single_character_substitution_is_rejected(
    codec: AttributionCodec, attribution: Attribution
) -> None:
    """Includes the base64 padding-bit case: 'A' -> 'B' in the last character decodes equal."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    value = codec.dumps_cookie(attribution)
    accepted = [
        (i, ch)
        for i in range(len(value))
        for ch in alphabet
        if ch != value[i]
        and codec.loads_cookie(value[:i] + ch + value[i + 1 :], now=NOW) is not None
    ]
    assert accepted == []


def test_a_remembered_cookie_is_still_checked_for_max_age_on_every_read(
    codec: AttributionCodec, attribution: Attribution
) -> None:
    value = codec.dumps_cookie(attribution)
    assert codec.loads_cookie(value, now=NOW) == attribution
    assert codec.loads_cookie(value, now=NOW + timedelta(days=91)) is None
    assert codec.loads_cookie(value, now=NOW - timedelta(hours=1)) is None  # click in the future
    assert codec.loads_cookie(value, now=NOW) == attribution


def test_a_verified_cookie_value_is_not_a_token(
    codec: AttributionCodec, attribution: Attribution
) -> None:
    value = codec.dumps_cookie(attribution)
    assert codec.loads_cookie(value, now=NOW) == attribution
    assert codec.loads_token(value, now=NOW) is None  # remembered per kind: salts still apart


def test_remembered_values_are_bounded(codec: AttributionCodec) -> None:
    for i in range(VERIFIED_CACHE_SIZE + 10):
        click = Attribution.capture(f"click{i}", now=NOW)
        assert codec.loads_cookie(codec.dumps_cookie(click), now=NOW) == click
    assert len(codec._verified) <= VERIFIED_CACHE_SIZE
