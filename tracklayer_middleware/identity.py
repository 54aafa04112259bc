"""Normalize and SHA-256-hash first-party identifiers the way X matches them.

Email: trim, lowercase, SHA-256 hex. Phone: E.164 *with* the leading ``+`` (X's rule, not
Meta's), SHA-256 hex. A value that already is a SHA-256 hex digest passes through, so hashing
twice is harmless. Error messages never repeat the raw value: it is PII.
"""

from __future__ import annotations

import hashlib
import re

from .errors import ConversionError

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MAX_PHONE_INPUT_LENGTH = 64
_SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_PHONE_PUNCTUATION_RE = re.compile(r"[\s\-().]")
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def is_sha256_hex(value: str) -> bool:
    """True for a SHA-256 hex digest as X expects it: 64 lowercase hex characters."""
    return bool(_SHA256_HEX_RE.fullmatch(value))


def sha256_hex(text: str) -> str:
    """The SHA-256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_email(raw: str) -> str:
    """Trim and lowercase an email address; ``ConversionError(field="email")`` on garbage."""
    value = _clean("email", raw, MAX_EMAIL_LENGTH)
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ConversionError(
            "email is not an email address (it needs text on both sides of one '@'): "
            "pass the address the customer gave, or its SHA-256 hex digest.",
            field="email",
        )
    if any(ch.isspace() for ch in value):
        raise ConversionError("email contains whitespace inside the address.", field="email")
    return value.lower()


def hash_email(raw: str) -> str:
    """SHA-256 hex of the normalized email; a 64-hex digest (any case) passes through."""
    digest = _as_digest(raw)
    return digest if digest is not None else sha256_hex(normalize_email(raw))


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """A phone number in E.164 with the leading ``+`` (``+11234567890``).

    ``+`` numbers are taken as they are once spaces, dashes, dots and parentheses are gone.
    National numbers (``(123) 456-7890``) need the ``phone`` extra (``phonenumbers``) and a
    ``default_region`` such as ``"US"``. Raises ``ConversionError(field="phone")``.
    """
    value = _PHONE_PUNCTUATION_RE.sub("", _clean("phone", raw, MAX_PHONE_INPUT_LENGTH))
    if value.startswith("+"):
        if not _E164_RE.fullmatch(value):
            raise ConversionError(
                "phone starts with '+' but is not an E.164 number ('+' then 7 to 15 digits, "
                "the first not 0), e.g. '+11234567890'.",
                field="phone",
            )
        return value
    if not value.isdigit():
        raise ConversionError(
            "phone may contain only digits, spaces, dashes, dots, parentheses and a leading "
            "'+'.",
            field="phone",
        )
    return _normalize_national(value, default_region)


def hash_phone(raw: str, default_region: str | None = None) -> str:
    """SHA-256 hex of the E.164 phone (with ``+``); a 64-hex digest (any case) passes through."""
    digest = _as_digest(raw)
    return digest if digest is not None else sha256_hex(normalize_phone(raw, default_region))


def _clean(field: str, raw: object, max_length: int) -> str:
    if not isinstance(raw, str):
        raise ConversionError(f"{field} must be a string, not {type(raw).__name__}.", field=field)
    value = raw.strip()
    if not value:
        raise ConversionError(f"{field} is empty: pass None to leave it out.", field=field)
    if len(value) > max_length:
        raise ConversionError(
            f"{field} is {len(value)} characters long, more than {max_length}: "
            "that is not a real value.",
            field=field,
        )
    if not value.isprintable():
        raise ConversionError(f"{field} contains control characters.", field=field)
    return value


def _as_digest(raw: object) -> str | None:
    if isinstance(raw, str):
        candidate = raw.strip().lower()
        if is_sha256_hex(candidate):
            return candidate
    return None


def _normalize_national(digits: str, default_region: str | None) -> str:
    try:
        import phonenumbers
    except ImportError:
        raise ConversionError(
            "phone is not in E.164 form ('+' and country code, e.g. '+11234567890'): pass it "
            "that way, or install the phone extra (`pip install tracklayer-middleware[phone]`) "
            "and set phone_default_region to normalize national numbers.",
            field="phone",
        ) from None
    if default_region is None:
        raise ConversionError(
            "phone has no country code: pass it in E.164 form ('+11234567890') or set "
            "phone_default_region (e.g. 'US') so national numbers can be normalized.",
            field="phone",
        )
    try:
        number = phonenumbers.parse(digits, default_region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_possible_number(number):
        raise ConversionError(
            f"phone is not a possible phone number for region {default_region}: pass it in "
            "E.164 form ('+11234567890').",
            field="phone",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
