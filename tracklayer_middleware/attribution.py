"""The click context of a paid visit (``Attribution``) and its signed cookie/token form.

An ``Attribution`` is created once, when a visitor lands with a valid ``twclid``; it travels
in one signed first-party cookie (``AttributionCodec.dumps_cookie``) or, out of a request, as
an attribution token a view can store on an order (``dumps_token``). Reading either never
raises: anything tampered, expired, foreign or malformed reads as ``None``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from itsdangerous import BadData, Signer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.url_safe import URLSafeSerializerMixin

from .consent import Consent
from .errors import ConversionError
from .settings import TrackLayerSettings

logger = logging.getLogger("tracklayer.attribution")

TWCLID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ATTRIBUTION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_LANDING_URL_LENGTH = 1024
# Browsers cap name=value at 4096 bytes; leave room for the name and the attributes.
MAX_COOKIE_VALUE_LENGTH = 3800
# A captured_at this far ahead of our clock cannot be ours.
CLOCK_SKEW = timedelta(minutes=5)
#: Verified cookie/token values remembered per codec (the values are at most 3,800 chars).
VERIFIED_CACHE_SIZE = 1024
_COOKIE_SALT = "tracklayer.attribution.cookie"
_TOKEN_SALT = "tracklayer.attribution.token"
_PAYLOAD_VERSION = 1
# RFC 3986 characters left alone in a path ('%' keeps existing escapes intact).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_CONSENT_CODES = {True: "g", False: "d", None: "u"}
_CONSENT_VALUES = {code: value for value, code in _CONSENT_CODES.items()}


def valid_twclid(value: object) -> bool:
    """True when ``value`` is a string X could have put in ``?twclid=``."""
    return isinstance(value, str) and bool(TWCLID_RE.fullmatch(value))


def sanitize_landing_url(url: object) -> str | None:
    """Reduce a landing URL to scheme, host, port, path and ``utm_*`` parameters.

    User info, fragment and every other parameter (``twclid``, ``gclid``, e-mail addresses
    some sites put in links, ...) are dropped; non-ASCII is percent-encoded. Only http(s)
    URLs are kept. The result is at most 1024 characters: when it would be longer the query
    is dropped, then the path is cut back to a ``/`` that fits. ``None`` when unusable.
    """
    if not isinstance(url, str):
        return None
    if len(url) <= _CACHED_URL_LENGTH:
        return _sanitize_cached(url)
    return _sanitize(url)


def _sanitize(url: str) -> str | None:
    url = url.strip()
    if not url or len(url) > 16 * MAX_LANDING_URL_LENGTH or not url.isprintable():
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    base = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    utm = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower().startswith("utm_")
    ]
    query = urlencode(utm)
    candidate = f"{base}{path}?{query}" if query else f"{base}{path}"
    if len(candidate) <= MAX_LANDING_URL_LENGTH:
        return candidate
    if len(base + path) <= MAX_LANDING_URL_LENGTH:
        return base + path
    room = MAX_LANDING_URL_LENGTH - len(base)
    head = path[:room].rpartition("/")[0]
    return f"{base}{head}/" if room > 0 else None


# Sanitizing costs ~6 µs (urlsplit, quote, parse_qsl) and the same URLs come back: a landing
# sanitizes its URL twice (capture, then signing) and every cookie read re-checks it. Only
# short inputs are remembered, so hostile URLs cannot pin more than 512 x 2 KB.
_CACHED_URL_LENGTH = 2 * MAX_LANDING_URL_LENGTH
_sanitize_cached = functools.lru_cache(maxsize=512)(_sanitize)


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous' URL-safe timed serializer without its zlib step.

    ``zlib.compress`` sets up a fresh deflate state on every call: ~40 µs per cookie to save
    ~16 characters of a ~240-character value (measured in docs/benchmarks.md). Values
    compressed by earlier versions (a leading ``.``) still load. It also keeps its signers
    instead of building one per call.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signers: dict[str | bytes | None, Signer] = {}

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        # itsdangerous builds a signer (keys re-encoded) on every dumps/loads; a signer keeps
        # no per-call state, so one per salt serves every call (~1 µs saved per cookie).
        signer = self._signers.get(salt)
        if signer is None:
            signer = self._signers[salt] = super().make_signer(salt)
        return signer

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(super(URLSafeSerializerMixin, self).dump_payload(obj))


@dataclass(frozen=True)
class Attribution:
    """The click context of one paid visit; holds no PII.

    ``attribution_id`` is random (the guide's "session ID"): a host can store it on a lead or
    order to tie that record to the click without storing anything personal.
    """

    twclid: str
    landing_url: str | None
    captured_at: datetime
    consent: Consent = field(default_factory=Consent)
    attribution_id: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def __post_init__(self) -> None:
        if not valid_twclid(self.twclid):
            raise ConversionError(
                "twclid must be the click id X appended to the landing URL "
                "(1-128 letters, digits, '_' or '-').",
                field="twclid",
            )
        if self.captured_at.tzinfo is None or self.captured_at.utcoffset() is None:
            raise ConversionError(
                "captured_at must be timezone-aware (e.g. datetime.now(timezone.utc)).",
                field="captured_at",
            )
        if not ATTRIBUTION_ID_RE.fullmatch(self.attribution_id):
            raise ConversionError(
                "attribution_id must be 1-64 URL-safe characters.", field="attribution_id"
            )

    @classmethod
    def capture(
        cls,
        twclid: str,
        landing_url: str | None = None,
        consent: Consent | None = None,
        now: datetime | None = None,
    ) -> Attribution:
        """A fresh attribution for a click seen ``now``: URL sanitized, time in UTC seconds."""
        moment = now if now is not None else datetime.now(timezone.utc)
        if moment.tzinfo is None:
            raise ConversionError("now must be timezone-aware.", field="now")
        return cls(
            twclid=twclid,
            landing_url=sanitize_landing_url(landing_url),
            captured_at=moment.astimezone(timezone.utc).replace(microsecond=0),
            consent=consent if consent is not None else Consent(),
        )


class AttributionCodec:
    """Signs and reads attributions as a cookie value or as a token (separate salts).

    ``settings.secret_key`` signs; ``secret_key_fallbacks`` still verify, so keys can rotate
    without dropping live clicks. Max-age (``cookie_max_age``) counts from the click and is
    enforced on every read.
    """

    def __init__(self, settings: TrackLayerSettings) -> None:
        # itsdangerous verifies with every key and signs with the last one.
        keys = list(reversed(settings.signing_keys))
        signer_kwargs = {"digest_method": hashlib.sha256}
        self._cookie = _Serializer(keys, salt=_COOKIE_SALT, signer_kwargs=signer_kwargs)
        self._token = _Serializer(keys, salt=_TOKEN_SALT, signer_kwargs=signer_kwargs)
        self._max_age = timedelta(seconds=settings.cookie_max_age)
        # A returning visitor sends the same cookie on every page view: values this codec
        # (these keys) already verified skip the HMAC and schema work. Time checks still run.
        self._verified: dict[tuple[str, str], Attribution] = {}

    def __repr__(self) -> str:
        return f"AttributionCodec(max_age={self._max_age})"

    def dumps_cookie(self, attribution: Attribution) -> str:
        """The signed cookie value (URL-safe, at most ``MAX_COOKIE_VALUE_LENGTH``)."""
        return self._dumps(self._cookie, attribution)

    def loads_cookie(self, value: str, *, now: datetime | None = None) -> Attribution | None:
        """The attribution in a cookie value, or ``None`` on any problem (logged at DEBUG)."""
        return self._loads(self._cookie, value, "cookie", now)

    def dumps_token(self, attribution: Attribution) -> str:
        """A signed attribution token to store on an order; contains ``.`` (a twclid never does)."""
        return self._dumps(self._token, attribution)

    def loads_token(self, token: str, *, now: datetime | None = None) -> Attribution | None:
        """The attribution in a token, or ``None`` on any problem (logged at DEBUG)."""
        return self._loads(self._token, token, "token", now)

    @staticmethod
    def _dumps(serializer: URLSafeTimedSerializer, attribution: Attribution) -> str:
        value = serializer.dumps(_to_payload(attribution))
        if len(value) > MAX_COOKIE_VALUE_LENGTH:
            raise ValueError(
                f"attribution would sign to {len(value)} characters, more than "
                f"{MAX_COOKIE_VALUE_LENGTH}: build it with Attribution.capture()."
            )
        return value

    def _loads(
        self, serializer: URLSafeTimedSerializer, value: object, kind: str, now: datetime | None
    ) -> Attribution | None:
        if not isinstance(value, str) or not value:
            logger.debug("ignoring attribution %s: empty or not text", kind)
            return None
        key = (kind, value)
        attribution = self._verified.get(key)
        if attribution is None:
            attribution = self._verify(serializer, value, kind)
            if attribution is None:
                return None
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()  # a crude bound, but lock-free and O(1)
            self._verified[key] = attribution
        moment = now if now is not None else datetime.now(timezone.utc)
        if moment - attribution.captured_at > self._max_age:
            logger.debug("ignoring attribution %s: click is older than max-age", kind)
            return None
        if attribution.captured_at - moment > CLOCK_SKEW:
            logger.debug("ignoring attribution %s: click time is in the future", kind)
            return None
        return attribution

    @staticmethod
    def _verify(serializer: URLSafeTimedSerializer, value: str, kind: str) -> Attribution | None:
        """Signature, canonical spelling and schema: what depends on the value alone."""
        if len(value) > MAX_COOKIE_VALUE_LENGTH:
            logger.debug("ignoring attribution %s: %d characters is too long", kind, len(value))
            return None
        try:
            _require_canonical(value)
            payload = serializer.loads(value)
        except (BadData, ValueError) as exc:  # UnicodeError is a ValueError
            logger.debug("ignoring attribution %s: %s", kind, type(exc).__name__)
            return None
        try:
            return _from_payload(payload)
        except (ValueError, TypeError, KeyError, OverflowError, OSError):
            logger.debug("ignoring attribution %s: payload does not match the schema", kind)
            return None


def _require_canonical(value: str) -> None:
    """Refuse base64 with stray padding bits, so one signed value has one spelling only."""
    for segment in value.split("."):
        if segment and not _canonical_base64url(segment):
            raise BadData("non-canonical base64")


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# Unpadded base64url of n bytes ends in a character whose unused low bits are zero: 4 bits
# when len % 4 == 2 (one byte in the last group), 2 bits when len % 4 == 3 (two bytes).
_CANONICAL_LAST = {0: None, 2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def _canonical_base64url(segment: str) -> bool:
    """Whether decoding and re-encoding ``segment`` gives it back (checked without decoding)."""
    if not _BASE64URL.fullmatch(segment):
        return False
    remainder = len(segment) % 4
    if remainder not in _CANONICAL_LAST:
        return False  # a single character in the last group holds no whole byte
    last = _CANONICAL_LAST[remainder]
    return last is None or segment[-1] in last


def _to_payload(attribution: Attribution) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": _PAYLOAD_VERSION,
        "t": attribution.twclid,
        "c": int(attribution.captured_at.timestamp()),
        "s": _CONSENT_CODES[attribution.consent.ad_storage]
        + _CONSENT_CODES[attribution.consent.ad_user_data],
        "i": attribution.attribution_id,
    }
    landing_url = sanitize_landing_url(attribution.landing_url)
    if landing_url is not None:
        payload["u"] = landing_url
    return payload


def _from_payload(payload: Any) -> Attribution:
    if not isinstance(payload, dict) or payload.get("v") != _PAYLOAD_VERSION:
        raise ValueError("unknown payload version")
    if set(payload) - {"v", "t", "c", "s", "i", "u"}:
        raise ValueError("unknown payload keys")
    captured = payload["c"]
    consent = payload["s"]
    landing_url = payload.get("u")
    if type(captured) is not int or not isinstance(consent, str) or len(consent) != 2:
        raise ValueError("bad field types")
    if landing_url is not None and sanitize_landing_url(landing_url) != landing_url:
        raise ValueError("landing url is not sanitized")
    return Attribution(
        twclid=payload["t"],
        landing_url=landing_url,
        captured_at=datetime.fromtimestamp(captured, timezone.utc),
        consent=Consent(_CONSENT_VALUES[consent[0]], _CONSENT_VALUES[consent[1]]),
        attribution_id=payload["i"],
    )
