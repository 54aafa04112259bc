"""One confirmed business action (``Conversion``), validated at the call and ready for X.

``build_conversion()`` checks every argument at once-per-call (raising ``ConversionError``
that names the field and the fix), hashes email/phone, attaches the click's twclid, freezes
``conversion_time`` and decides the initial state: ``pending``, ``skipped_consent`` (no
identifier value is kept, only names) or ``skipped_no_identifier``. Raw email/phone never
reach the ``Conversion``: it holds only their SHA-256.
"""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import logging
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from .attribution import Attribution, AttributionCodec, valid_twclid
from .consent import Consent
from .currency import ISO_4217
from .errors import ConversionError
from .identity import hash_email, hash_phone
from .settings import EventMapping, TrackLayerSettings

logger = logging.getLogger("tracklayer.conversion")

MAX_CONVERSION_ID_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 1000
MAX_CONTENTS = 500
MAX_TEXT_LENGTH = 256
MAX_USER_AGENT_LENGTH = 1024
FUTURE_SKEW = timedelta(minutes=5)
OLD_AFTER = timedelta(days=7)
PENDING = "pending"
SKIPPED_CONSENT = "skipped_consent"
SKIPPED_NO_IDENTIFIER = "skipped_no_identifier"
_RECORD_VERSION = 1
# Identifiers X matches on; ip_address/user_agent only count together with one of these.
_MATCHING = ("twclid", "hashed_email", "hashed_phone")


@dataclass(frozen=True)
class Content:
    """One line of ``contents`` (X's product-level detail)."""

    content_id: str | None = None
    content_name: str | None = None
    content_type: str | None = None
    content_price: float | None = None
    num_items: int | None = None
    content_group_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("content_id", "content_type", "content_group_id"):
            _check_text(f"contents.{name}", getattr(self, name), MAX_TEXT_LENGTH)
        _check_text("contents.content_name", self.content_name, MAX_DESCRIPTION_LENGTH)
        if self.content_price is not None:
            object.__setattr__(
                self, "content_price", _money("contents.content_price", self.content_price)
            )
        if self.num_items is not None:
            _positive_int("contents.num_items", self.num_items)
        if all(getattr(self, f.name) is None for f in fields(self)):
            raise ConversionError(
                "a contents item is empty: give at least content_id or content_name.",
                field="contents",
            )

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any]) -> Content:
        """A ``Content`` from a dict with X's keys; unknown keys are an error."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in item if k not in known)
        if unknown:
            raise ConversionError(
                f"contents item has unknown keys {unknown}: use {', '.join(known)}.",
                field="contents",
            )
        return cls(**item)

    def to_x(self) -> dict[str, Any]:
        """X's JSON for this item (unset fields left out)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True, repr=False)
class Conversion:
    """A validated conversion; holds hashes only, never raw email or phone."""

    event: str
    event_id: str
    pixel_id: str
    conversion_id: str
    conversion_time: datetime
    value: float | None = None
    currency: str | None = None
    number_items: int | None = None
    description: str | None = None
    contents: tuple[Content, ...] = ()
    twclid: str | None = None
    hashed_email: str | None = None
    hashed_phone: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    external_id: str | None = None
    attribution_id: str | None = None
    consent: Consent = field(default_factory=Consent)
    initial_state: str = PENDING
    attribution_note: str = "no_twclid"
    identifiers: tuple[str, ...] = ()
    """Names of the identifiers given (kept even when a skip dropped their values)."""

    def to_x(self, *, send_external_id: bool = False) -> dict[str, Any]:
        """One element of X's ``{"conversions": [...]}`` body."""
        return x_payload(self.to_record(), send_external_id=send_external_id)

    def identifier_names(self) -> list[str]:
        """Which identifiers were given (names only, safe to log)."""
        return list(self.identifiers)

    def pixel_event(self) -> dict[str, Any]:
        """The browser Pixel twin for ``twq('event', event_id, params)``: same conversion_id."""
        params: dict[str, Any] = {}
        if self.value is not None:
            params["value"] = self.value
        if self.currency is not None:
            params["currency"] = self.currency
        params["conversion_id"] = self.conversion_id
        event_id = EventMapping(self.event, self.event_id).pixel_event_id(self.pixel_id)
        return {"event_id": event_id, "params": params}

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict for the outbox (hashes only); ``from_record()`` inverts it."""
        record: dict[str, Any] = {"v": _RECORD_VERSION}
        for f in fields(self):
            record[f.name] = getattr(self, f.name)
        record["conversion_time"] = format_x_time(self.conversion_time)
        record["contents"] = [item.to_x() for item in self.contents]
        record["consent"] = self.consent.to_json()
        record["identifiers"] = list(self.identifiers)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Conversion:
        """Rebuild a conversion written by ``to_record()``."""
        if record.get("v") != _RECORD_VERSION:
            raise ValueError(f"unknown conversion record version {record.get('v')!r}")
        values = {name: record[name] for name in _RECORD_FIELDS if name in record}
        values["conversion_time"] = parse_x_time(record["conversion_time"])
        values["contents"] = tuple(Content(**item) for item in record.get("contents", ()))
        values["consent"] = Consent.from_json(record.get("consent"))
        values["identifiers"] = tuple(record.get("identifiers", ()))
        return cls(**values)

    def __repr__(self) -> str:
        shown = {
            "twclid": self.twclid,
            "hashed_email": self.hashed_email,
            "hashed_phone": self.hashed_phone,
        }
        ids = ", ".join(
            f"{name}={_short(shown[name])}" if shown.get(name) else name
            for name in self.identifiers
        )
        money = f" value={self.value} {self.currency}" if self.value is not None else ""
        return (
            f"<Conversion {self.event} ({self.event_id}) id={self.conversion_id!r} "
            f"at {format_x_time(self.conversion_time)}{money} state={self.initial_state} "
            f"attribution={self.attribution_note} identifiers=[{ids}]>"
        )


# dataclasses.fields() builds a new tuple per call; the sender rebuilds thousands of rows.
_RECORD_FIELDS = tuple(f.name for f in fields(Conversion))


def x_payload(record: Mapping[str, Any], *, send_external_id: bool = False) -> dict[str, Any]:
    """One element of X's ``{"conversions": [...]}`` body from an outbox record
    (``Conversion.to_record()``), which already holds X's spellings (time, contents).

    The sender builds every body this way instead of rebuilding each ``Conversion`` first
    (about a fifth of a drain's CPU). Raises ``ValueError``, ``KeyError`` or ``TypeError``
    for a record it cannot read (another record version, a damaged row).
    """
    if record.get("v") != _RECORD_VERSION:
        raise ValueError(f"unknown conversion record version {record.get('v')!r}")
    body: dict[str, Any] = {
        "conversion_time": _text(record, "conversion_time"),
        "event_id": _text(record, "event_id"),
        "conversion_id": _text(record, "conversion_id"),
    }
    for key, name in _X_OPTIONAL:
        value = record.get(name)
        if value is not None:
            body[key] = value
    contents = record.get("contents")
    if contents:
        body["contents"] = [dict(item) for item in contents]
    identifiers: list[dict[str, str]] = [
        {key: record[name]} for key, name in _X_IDENTIFIERS if record.get(name)
    ]
    device = {name: record[name] for name in ("ip_address", "user_agent") if record.get(name)}
    if device:
        identifiers.append(device)  # X's example keeps these two in one object
    if send_external_id and record.get("external_id"):
        identifiers.append({"external_id": record["external_id"]})
    body["identifiers"] = identifiers
    return body


_X_OPTIONAL = (
    ("value", "value"),
    ("price_currency", "currency"),
    ("number_items", "number_items"),
    ("description", "description"),
)
_X_IDENTIFIERS = (
    ("twclid", "twclid"),
    ("hashed_email", "hashed_email"),
    ("hashed_phone_number", "hashed_phone"),
)


def _text(record: Mapping[str, Any], name: str) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise TypeError(f"record field {name} is {type(value).__name__}, not text")
    return value


def build_conversion(
    settings: TrackLayerSettings,
    event: str,
    *,
    conversion_id: str,
    conversion_time: datetime | None = None,
    value: float | Decimal | None = None,
    currency: str | None = None,
    number_items: int | None = None,
    description: str | None = None,
    contents: Sequence[Mapping[str, Any] | Content] | None = None,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    attribution: Attribution | str | None = None,
    consent: Consent | Mapping[str, Any] | None = None,
    attribution_note: str | None = None,
    now: datetime | None = None,
    **unknown: Any,
) -> Conversion:
    """Validate a conversion now and return it, ready to queue.

    ``attribution`` is an ``Attribution`` (from the cookie), an attribution token (contains
    ``.``), a raw twclid (the caller asserts consent) or None. An unreadable or expired token
    does not raise: the conversion is kept without twclid and ``attribution_note`` says so.
    ``attribution_note`` overrides the recorded source (the tracker passes ``"cookie"``).
    ``consent`` (a ``Consent`` or the guide's ``{"adStorage": ..., "adUserData": ...}``) wins
    over the consent carried by the attribution.
    Raises ``ConversionError`` naming the bad field (an unknown keyword too, with the nearest
    known name: ``convert(..., emial=...)`` must not be a bare ``TypeError``).
    """
    if unknown:
        _refuse_unknown_fields(unknown)
    mapping = settings.event(event) if isinstance(event, str) else None
    if mapping is None:
        known = ", ".join(sorted(settings.events)) or "none configured yet"
        raise ConversionError(
            f"unknown event {event!r}: add it to the events setting with its X event id "
            f"from Events Manager (known events: {known}).",
            field="event",
        )
    moment = _aware("now", now) if now is not None else datetime.now(timezone.utc)
    when = _conversion_time(conversion_time, moment)
    _check_conversion_id(conversion_id)
    amount = None if value is None else _money("value", value)
    if currency is not None and (not isinstance(currency, str) or currency not in ISO_4217):
        raise ConversionError(
            f"currency {currency!r} is not an ISO-4217 code: use three capital letters like "
            "'USD' or 'EUR'.",
            field="currency",
        )
    if number_items is not None:
        _positive_int("number_items", number_items)
    _check_text("description", description, MAX_DESCRIPTION_LENGTH, allow_newlines=True)
    items = _contents(contents)
    # Identifier values: X refuses blank ones (and would fail the whole batch).
    _check_text("external_id", external_id, MAX_TEXT_LENGTH, allow_blank=False)
    _check_text("user_agent", user_agent, MAX_USER_AGENT_LENGTH, allow_blank=False)
    ip = _ip(ip_address)
    hashed_email = None if email is None else hash_email(email)
    hashed_phone = None if phone is None else hash_phone(phone, settings.phone_default_region)
    twclid, attribution_id, base_consent, note = _resolve_attribution(
        settings, attribution, moment
    )
    note = attribution_note or note
    effective_consent = base_consent.merged(_consent(consent))
    values: dict[str, Any] = {
        "twclid": twclid,
        "hashed_email": hashed_email,
        "hashed_phone": hashed_phone,
        "ip_address": ip,
        "user_agent": user_agent,
        "external_id": external_id,
    }
    names = tuple(name for name, v in values.items() if v is not None)
    if not effective_consent.sending_allowed(settings.consent_required):
        state, note = SKIPPED_CONSENT, "consent_denied"
        values.update(twclid=None, hashed_email=None, hashed_phone=None)
        values.update(ip_address=None, user_agent=None)
    elif not any(values[name] for name in _MATCHING):
        state = SKIPPED_NO_IDENTIFIER
    else:
        state = PENDING
    return Conversion(
        event=event,
        event_id=mapping.event_id,
        pixel_id=settings.pixel_id,
        conversion_id=conversion_id,
        conversion_time=when,
        value=amount,
        currency=currency or (settings.default_currency if amount is not None else None),
        number_items=number_items,
        description=description,
        contents=items,
        attribution_id=attribution_id,
        consent=effective_consent,
        initial_state=state,
        attribution_note=note,
        identifiers=names,
        **values,
    )


def _refuse_unknown_fields(unknown: Mapping[str, Any]) -> None:
    params = inspect.signature(build_conversion).parameters.values()
    known = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    name = sorted(unknown)[0]
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConversionError(
        f"convert() got an unknown field {name!r}.{suggestion} Known fields: {', '.join(known)}.",
        field=name,
    )


def format_x_time(moment: datetime) -> str:
    """X's time format: UTC with milliseconds, ``2026-04-24T09:42:13.000Z``."""
    utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def parse_x_time(text: str) -> datetime:
    """Inverse of ``format_x_time``."""
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=timezone.utc)


def _resolve_attribution(
    settings: TrackLayerSettings, attribution: Attribution | str | None, now: datetime
) -> tuple[str | None, str | None, Consent, str]:
    """(twclid, attribution_id, consent carried by the click, note on where twclid came from)."""
    if attribution is None:
        return None, None, Consent(), "no_twclid"
    if isinstance(attribution, Attribution):
        return attribution.twclid, attribution.attribution_id, attribution.consent, "attribution"
    if not isinstance(attribution, str):
        raise ConversionError(
            "attribution must be tracker.attribution_token, a twclid string, an Attribution "
            f"or None, not {type(attribution).__name__}.",
            field="attribution",
        )
    if "." in attribution:
        click = AttributionCodec(settings).loads_token(attribution, now=now)
        if click is None:
            return None, None, Consent(), "token_invalid_or_expired"
        return click.twclid, click.attribution_id, click.consent, "token"
    if not valid_twclid(attribution):
        raise ConversionError(
            "attribution is neither an attribution token nor a valid twclid (1-128 letters, "
            "digits, '_' or '-').",
            field="attribution",
        )
    # A raw twclid means the caller vouches that the visitor agreed to ad user data.
    return attribution, None, Consent(ad_user_data=True), "twclid"


def _conversion_time(given: datetime | None, now: datetime) -> datetime:
    when = now if given is None else _aware("conversion_time", given)
    if when - now > FUTURE_SKEW:
        raise ConversionError(
            "conversion_time is in the future: pass the moment the action happened "
            "(or leave it out to use now).",
            field="conversion_time",
        )
    if now - when > OLD_AFTER:
        logger.warning(
            "conversion_time %s is more than 7 days old; X may not attribute it",
            format_x_time(when),
        )
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _aware(name: str, moment: object) -> datetime:
    if not isinstance(moment, datetime):
        raise ConversionError(f"{name} must be a datetime.", field=name)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConversionError(
            f"{name} is a naive datetime: make it timezone-aware, e.g. "
            "datetime.now(timezone.utc) or dt.replace(tzinfo=timezone.utc).",
            field=name,
        )
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ConversionError(f"{name} is outside the calendar X can take.", field=name) from None


def _check_conversion_id(conversion_id: object) -> None:
    if not isinstance(conversion_id, str) or not conversion_id.strip():
        raise ConversionError(
            "conversion_id is required: pass one stable id per action (e.g. "
            "'ord_10492_purchase') and reuse it in the Pixel and every retry.",
            field="conversion_id",
        )
    if len(conversion_id) > MAX_CONVERSION_ID_LENGTH:
        raise ConversionError(
            f"conversion_id is {len(conversion_id)} characters, more than "
            f"{MAX_CONVERSION_ID_LENGTH}: use a short stable id.",
            field="conversion_id",
        )
    if not conversion_id.isprintable() or conversion_id != conversion_id.strip():
        raise ConversionError(
            "conversion_id contains control characters or leading/trailing whitespace: "
            "it must be byte-for-byte the id the Pixel sends.",
            field="conversion_id",
        )


def _money(name: str, amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal)):
        raise ConversionError(f"{name} must be a number, not {type(amount).__name__}.", field=name)
    try:
        number = float(amount)
    except (OverflowError, ValueError):  # ValueError: Decimal("sNaN")
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ConversionError(f"{name} must be a finite number >= 0.", field=name)
    return number


def _positive_int(name: str, number: object) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
        raise ConversionError(f"{name} must be a whole number > 0.", field=name)


def _check_text(
    name: str, text: object, max_length: int, *, allow_newlines: bool = False,
    allow_blank: bool = True,
) -> None:
    if text is None:
        return
    if not isinstance(text, str) or not text or (not allow_blank and not text.strip()):
        raise ConversionError(f"{name} must be a non-empty string or None.", field=name)
    if len(text) > max_length:
        raise ConversionError(
            f"{name} is {len(text)} characters, more than {max_length}.", field=name
        )
    allowed = "\t\n\r" if allow_newlines else ""
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text):
        raise ConversionError(f"{name} contains control characters.", field=name)


def _contents(contents: object) -> tuple[Content, ...]:
    if contents is None:
        return ()
    if isinstance(contents, (str, bytes, Mapping)) or not isinstance(contents, Sequence):
        raise ConversionError(
            "contents must be a list of dicts like {'content_id': 'sku-1', 'num_items': 1}.",
            field="contents",
        )
    if len(contents) > MAX_CONTENTS:
        raise ConversionError(
            f"contents has {len(contents)} items, more than X's {MAX_CONTENTS}.",
            field="contents",
        )
    items: list[Content] = []
    for item in contents:
        if isinstance(item, Content):
            items.append(item)
        elif isinstance(item, Mapping):
            items.append(Content.from_mapping(item))
        else:
            raise ConversionError(
                f"contents items must be dicts or Content, not {type(item).__name__}.",
                field="contents",
            )
    return tuple(items)


def _consent(consent: object) -> Consent:
    if consent is None:
        return Consent()
    if isinstance(consent, Consent):
        return consent
    try:
        return Consent.from_json(consent)
    except ValueError as exc:
        raise ConversionError(str(exc), field="consent") from None


def _ip(ip_address: object) -> str | None:
    if ip_address is None:
        return None
    try:
        return str(ipaddress.ip_address(str(ip_address).strip()))
    except ValueError:
        raise ConversionError(
            "ip_address is not an IPv4 or IPv6 address.", field="ip_address"
        ) from None


def _short(value: str | None) -> str:
    return f"{value[:8]}…" if value and len(value) > 8 else str(value)
