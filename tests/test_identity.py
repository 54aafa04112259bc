"""Email/phone normalization and hashing, with X's published vectors."""

from __future__ import annotations

import sys

import pytest

from tracklayer_middleware.errors import ConversionError
from tracklayer_middleware.identity import (
    hash_email,
    hash_phone,
    is_sha256_hex,
    normalize_email,
    normalize_phone,
)

EMAIL_VECTOR = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
PHONE_VECTOR = "1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"


def test_email_vector_after_trim_and_lowercase() -> None:
    assert hash_email("test@example.com") == EMAIL_VECTOR
    assert hash_email("  Test@Example.COM ") == EMAIL_VECTOR
    assert EMAIL_VECTOR.startswith("973dfe463ec85785f5f95af5ba3906ee")  # the guide's prefix


def test_phone_vector_keeps_the_plus() -> None:
    assert hash_phone("+11234567890") == PHONE_VECTOR
    assert hash_phone(" +1 (123) 456-7890 ") == PHONE_VECTOR
    assert hash_phone("+1.123.456.7890") == PHONE_VECTOR


def test_national_phone_uses_the_default_region() -> None:
    assert normalize_phone("(123) 456-7890", "US") == "+11234567890"
    assert hash_phone("123-456-7890", default_region="US") == PHONE_VECTOR
    assert normalize_phone("030 1234567", "DE") == "+49301234567"
    assert normalize_phone("0044 20 7946 0958", "DE") == "+442079460958"


def test_national_phone_without_region_explains_the_fix() -> None:
    with pytest.raises(ConversionError, match="phone_default_region") as info:
        normalize_phone("1234567890")
    assert info.value.field == "phone"


def test_national_phone_without_phonenumbers_asks_for_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "phonenumbers", None)
    with pytest.raises(ConversionError, match=r"tracklayer-middleware\[phone\]"):
        normalize_phone("1234567890", "US")
    assert normalize_phone("+11234567890") == "+11234567890"  # E.164 needs no extra


def test_impossible_national_number() -> None:
    with pytest.raises(ConversionError, match="not a possible phone number"):
        normalize_phone("12", "US")


@pytest.mark.parametrize(
    "raw", ["+0123456789", "+12", "+1234567890123456", "+1 234 abc 7890", "++11234567890"]
)
def test_bad_e164(raw: str) -> None:
    with pytest.raises(ConversionError) as info:
        normalize_phone(raw, "US")
    assert info.value.field == "phone"


def test_letters_in_a_phone() -> None:
    with pytest.raises(ConversionError, match="only digits"):
        normalize_phone("call-me-maybe", "US")


@pytest.mark.parametrize("digest", [EMAIL_VECTOR, PHONE_VECTOR])
def test_digests_pass_through_never_double_hashed(digest: str) -> None:
    assert hash_email(digest) == digest
    assert hash_phone(digest) == digest
    assert hash_email(f"  {digest.upper()} ") == digest  # X wants lowercase


def test_is_sha256_hex() -> None:
    assert is_sha256_hex(EMAIL_VECTOR)
    assert not is_sha256_hex(EMAIL_VECTOR.upper())
    assert not is_sha256_hex(EMAIL_VECTOR[:-1])
    assert not is_sha256_hex(EMAIL_VECTOR + "0")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not-an-email", "'@'"),
        ("@example.com", "'@'"),
        ("someone@", "'@'"),
        ("a b@example.com", "whitespace"),
        ("a\x00b@example.com", "control characters"),
        ("x" * 250 + "@example.com", "more than 254"),
    ],
)
def test_garbage_email_names_the_field_and_hides_the_value(raw: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message) as info:
        hash_email(raw)
    assert info.value.field == "email"
    if raw.strip():
        assert raw not in str(info.value)


@pytest.mark.parametrize("raw", [None, 42, b"test@example.com"])
def test_non_string_identifiers(raw: object) -> None:
    with pytest.raises(ConversionError, match="must be a string"):
        hash_email(raw)  # type: ignore[arg-type]
    with pytest.raises(ConversionError, match="must be a string"):
        hash_phone(raw)  # type: ignore[arg-type]


def test_overlong_phone_and_control_chars() -> None:
    with pytest.raises(ConversionError, match="more than 64"):
        hash_phone("1" * 65, "US")
    with pytest.raises(ConversionError, match="control characters"):
        hash_phone("+1123\n4567890")


def test_error_does_not_echo_the_phone() -> None:
    with pytest.raises(ConversionError) as info:
        normalize_phone("555-867-5309x", "US")
    assert "867" not in str(info.value)


def test_normalize_email_keeps_unicode_and_lowercases() -> None:
    assert normalize_email(" Jürgen@Example.DE ") == "jürgen@example.de"


def test_trailing_newline_is_not_a_digest() -> None:
    assert not is_sha256_hex(EMAIL_VECTOR + "\n")
