"""``TrackLayerSettings``: every knob in one frozen object, validated all at once.

``TrackLayerSettings.from_mapping()`` is the way in from config files and framework settings:
it accepts snake_case, UPPER_CASE (Django style) and the guide's camelCase destination config
(``pixelId``, ``apiVersion``, ``endpoint``, ``tokenSecretName``, ``allowedEnvironments``,
``enabled``, ``xEventMap``), rejects unknown keys with a suggestion, and reports every problem
in one ``ConfigurationError``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .currency import ISO_4217
from .errors import ConfigurationError

PIXEL_ID_RE = re.compile(r"^[A-Za-z0-9]{2,32}$")
EVENT_ID_RE = re.compile(r"^(?:tw-[A-Za-z0-9]{2,32}-)?[A-Za-z0-9]{2,32}$")
EVENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

AuthMode = Literal["bearer", "pixel_token", "oauth1"]
DeliveryMode = Literal["background", "worker", "celery"]

AUTH_MODES: tuple[str, ...] = ("bearer", "pixel_token", "oauth1")
DELIVERY_MODES: tuple[str, ...] = ("background", "worker", "celery")
DEFAULT_OUTBOX = "sqlite:///.tracklayer/outbox.sqlite3"
MIN_SECRET_KEY_LENGTH = 16

# Declared field types checked before validation, and what each is called in a message.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "AuthMode": (str,),
    "DeliveryMode": (str,),
}
_TYPE_WORDS = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "tuple[str, ...]": "a list of strings",
    "Mapping[str, EventMapping]": "a mapping of event names to event ids",
    "AuthMode": "a string",
    "DeliveryMode": "a string",
}
_ALSO_ACCEPTED: dict[str, tuple[type, ...]] = {"api_version": (int,)}  # the guide's 12 or "12"

# The guide's camelCase names that do not map to a snake_case field by plain conversion.
_ALIASES = {
    "token_secret_name": "token_env",
    "x_event_map": "events",
    "event_map": "events",
}


@dataclass(frozen=True)
class EventMapping:
    """One canonical TrackLayer event routed to one X event id (from Events Manager)."""

    name: str
    event_id: str
    label: str | None = None

    def pixel_event_id(self, pixel_id: str) -> str:
        """The ``tw-<pixel>-<event>`` id the browser Pixel's ``twq('event', ...)`` expects."""
        if self.event_id.startswith("tw-"):
            return self.event_id
        return f"tw-{pixel_id}-{self.event_id}"


@dataclass(frozen=True)
class TrackLayerSettings:
    """Immutable, validated configuration of one TrackLayer engine.

    Secrets never live here: the X token is read from the environment variable named by
    ``token_env`` at the moment it is needed (``token()``), and ``secret_key`` is hidden from
    ``repr``.
    """

    pixel_id: str
    secret_key: str = field(repr=False)
    events: Mapping[str, EventMapping] = field(default_factory=dict)
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    enabled: bool = True
    environment: str = field(
        default_factory=lambda: os.environ.get("TRACKLAYER_ENVIRONMENT", "development")
    )
    allowed_environments: tuple[str, ...] = ("production",)
    api_version: str = "12"
    api_base_url: str = "https://ads-api.x.com"
    endpoint: str | None = None
    auth: AuthMode = "bearer"
    token_env: str = "X_ADS_BEARER_TOKEN"
    oauth1_consumer_key_env: str = "X_CONSUMER_KEY"
    oauth1_consumer_secret_env: str = "X_CONSUMER_SECRET"
    oauth1_access_token_env: str = "X_ACCESS_TOKEN"
    oauth1_access_token_secret_env: str = "X_ACCESS_TOKEN_SECRET"
    # Attribution cookie and browser endpoint.
    cookie_name: str = "tl_attr"
    cookie_max_age: int = 90 * 24 * 3600
    cookie_secure: bool | None = None
    trusted_proxies: tuple[str, ...] = ()
    attribution_path: str = "/api/tracklayer/session-attribution"
    allowed_origins: tuple[str, ...] = ()
    # Consent.
    consent_required: bool = False
    consent_resolver: Callable[[Any], Any] | None = field(default=None, compare=False)
    # Identity and payload.
    phone_default_region: str | None = None
    send_external_id: bool = False
    default_currency: str = "USD"
    # Delivery.
    outbox: str = DEFAULT_OUTBOX
    delivery: DeliveryMode = "background"
    celery_app: str | None = None
    celery_broker_url: str | None = None
    timeout_seconds: float = 30.0
    lease_seconds: float = 120.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 12
    dead_after_hours: float = 72.0
    batch_size: int = 500
    rate_limit_per_15min: int = 48_000
    shutdown_timeout: float = 5.0
    retention_days: float = 30.0

    def __post_init__(self) -> None:
        # Values of the wrong type (a ``null`` or ``"false"`` in a config file) are reported
        # first: the value checks below assume the declared types.
        problems = list(self._type_problems()) or list(self._problems())
        if problems:
            raise ConfigurationError(problems)

    # ------------------------------------------------------------------ derived values
    @property
    def dry_run(self) -> bool:
        """True when this process may not call X: everything else still happens."""
        return self.environment not in self.allowed_environments

    @property
    def endpoint_url(self) -> str:
        """The full Conversions API URL for this pixel."""
        base = self.api_base_url.rstrip("/")
        return f"{base}/{self.api_version}/measurement/conversions/{self.pixel_id}"

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """Keys that verify a cookie or token: the current one first, then the fallbacks."""
        return (self.secret_key, *self.secret_key_fallbacks)

    @property
    def credential_envs(self) -> tuple[str, ...]:
        """Names of the environment variables holding the X credentials ``auth`` needs."""
        if self.auth == "oauth1":
            return (
                self.oauth1_consumer_key_env,
                self.oauth1_consumer_secret_env,
                self.oauth1_access_token_env,
                self.oauth1_access_token_secret_env,
            )
        return (self.token_env,)

    def token(self) -> str | None:
        """The X token for ``bearer``/``pixel_token`` auth, read from the environment now."""
        value = os.environ.get(self.token_env, "").strip()
        return value or None

    def event(self, name: str) -> EventMapping | None:
        """The mapping of a canonical event name, or None when it is not configured."""
        return self.events.get(name)

    def replace(self, **changes: Any) -> TrackLayerSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def _type_problems(self) -> Iterable[str]:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            annotation = str(f.type)
            base = annotation.removesuffix(" | None")
            if value is None and base != annotation:
                continue
            if base == "tuple[str, ...]":
                ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            elif base == "Mapping[str, EventMapping]":
                ok = isinstance(value, Mapping) and all(
                    isinstance(v, EventMapping) for v in value.values()
                )
            elif base in _FIELD_TYPES:
                accepted = _FIELD_TYPES[base] + _ALSO_ACCEPTED.get(f.name, ())
                ok = isinstance(value, accepted) and (
                    base == "bool" or not isinstance(value, bool)
                )
            else:
                continue
            if not ok:
                yield f"{f.name} must be {_TYPE_WORDS.get(base, base)}, not {type(value).__name__}."

    def _problems(self) -> Iterable[str]:
        if not self.pixel_id:
            yield "pixel_id is empty: set it to your X pixel id (Events Manager, e.g. 'o1a2b')."
        elif not PIXEL_ID_RE.fullmatch(self.pixel_id):
            yield (
                f"pixel_id {self.pixel_id!r} is not a valid X pixel id: "
                "use the short alphanumeric id from Events Manager, e.g. 'o1a2b'."
            )
        if not self.secret_key:
            yield (
                "secret_key is empty: set a long random string (e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`); "
                "it signs the attribution cookie."
            )
        if any(not k for k in self.secret_key_fallbacks):
            yield "secret_key_fallbacks contains an empty key: remove it."
        for name, mapping in self.events.items():
            if not EVENT_NAME_RE.fullmatch(name):
                yield (
                    f"event name {name!r} is invalid: use lower_snake_case like 'purchase'."
                )
            if not mapping.event_id:
                yield f"event {name!r} has an empty event id: copy it from X Events Manager."
            elif not EVENT_ID_RE.fullmatch(mapping.event_id):
                yield (
                    f"event {name!r} has event id {mapping.event_id!r}, which is not an X "
                    "event id: use the id from Events Manager (e.g. 'o87ni') or the "
                    "'tw-<pixel>-<event>' form."
                )
            elif mapping.event_id.startswith("tw-") and not mapping.event_id.startswith(
                f"tw-{self.pixel_id}-"
            ):
                yield (
                    f"event {name!r} has event id {mapping.event_id!r} of another pixel: "
                    f"it must start with 'tw-{self.pixel_id}-'."
                )
        if not str(self.api_version).isdigit():
            yield f"api_version {self.api_version!r} must be a number like '12'."
        base = urlsplit(self.api_base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            yield f"api_base_url {self.api_base_url!r} must be an http(s) URL like 'https://ads-api.x.com'."
        if self.endpoint is not None and self.endpoint.rstrip("/") != self.endpoint_url:
            yield (
                f"endpoint {self.endpoint!r} does not agree with pixel_id/api_version/"
                f"api_base_url, which give {self.endpoint_url!r}: fix one of them "
                "(or drop endpoint; it is derived)."
            )
        if self.auth not in AUTH_MODES:
            yield f"auth {self.auth!r} is unknown: use one of {', '.join(AUTH_MODES)}."
        for env_field in (
            "token_env",
            "oauth1_consumer_key_env",
            "oauth1_consumer_secret_env",
            "oauth1_access_token_env",
            "oauth1_access_token_secret_env",
        ):
            if not ENV_NAME_RE.fullmatch(getattr(self, env_field)):
                yield (
                    f"{env_field} must name an environment variable (like "
                    "'X_ADS_BEARER_TOKEN'), not hold the secret itself."
                )
        if not self.environment:
            yield "environment is empty: name this deployment, e.g. 'production' or 'staging'."
        if not re.fullmatch(r"[A-Za-z0-9_.~-]{1,64}", self.cookie_name):
            yield f"cookie_name {self.cookie_name!r} must be a short cookie token like 'tl_attr'."
        if self.cookie_max_age <= 0:
            yield "cookie_max_age must be a positive number of seconds (default 90 days)."
        if not self.attribution_path.startswith("/"):
            yield f"attribution_path {self.attribution_path!r} must start with '/'."
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                yield (
                    f"allowed_origins entry {origin!r} must be an origin like "
                    "'https://shop.example.com' (scheme and host, no path)."
                )
        if self.consent_resolver is not None and not callable(self.consent_resolver):
            yield "consent_resolver must be a callable taking the request."
        if self.default_currency not in ISO_4217:
            yield f"default_currency {self.default_currency!r} must be an ISO-4217 code like 'USD'."
        if self.phone_default_region is not None and not re.fullmatch(
            r"[A-Z]{2}", self.phone_default_region
        ):
            yield (
                f"phone_default_region {self.phone_default_region!r} must be a two-letter "
                "region code like 'US'."
            )
        if not (
            self.outbox in ("memory", "django", "celery") or self.outbox.startswith("sqlite:///")
        ):
            yield (
                f"outbox {self.outbox!r} is unknown: use 'memory', 'sqlite:///path/to/file', "
                "'django' (with tracklayer_django) or 'celery'."
            )
        if self.delivery not in DELIVERY_MODES:
            yield f"delivery {self.delivery!r} is unknown: use one of {', '.join(DELIVERY_MODES)}."
        if self.delivery == "celery" and not (self.celery_app or self.celery_broker_url):
            yield "delivery='celery' needs celery_app ('proj.celery:app') or celery_broker_url."
        positive = (
            "timeout_seconds",
            "lease_seconds",
            "retry_base_seconds",
            "retry_max_seconds",
            "dead_after_hours",
            "shutdown_timeout",
            "retention_days",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                yield f"{name} must be greater than 0."
        if self.lease_seconds <= self.timeout_seconds:
            yield (
                f"lease_seconds ({self.lease_seconds}) must exceed timeout_seconds "
                f"({self.timeout_seconds}), or a slow POST could be sent twice."
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            yield "retry_max_seconds must be at least retry_base_seconds."
        if self.max_attempts < 1:
            yield "max_attempts must be at least 1."
        if not 1 <= self.batch_size <= 500:
            yield f"batch_size {self.batch_size} must be between 1 and 500 (X's limit)."
        if self.rate_limit_per_15min < 1:
            yield "rate_limit_per_15min must be at least 1."

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], **overrides: Any
    ) -> TrackLayerSettings:
        """Build settings from a dict (config file, ``app.config``, ``settings.TRACKLAYER``).

        Keys may be snake_case, UPPER_CASE or the guide's camelCase; ``overrides`` win.
        Raises ``ConfigurationError`` listing every unknown key (with the nearest known name)
        and every invalid value at once.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for raw_key, value in {**dict(mapping), **overrides}.items():
            key = normalize_key(str(raw_key))
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
                problems.append(f"unknown setting {raw_key!r}.{suggestion}")
                continue
            values[key] = value
        values.setdefault("pixel_id", "")  # reported as empty by validation below
        values.setdefault("secret_key", "")
        try:
            values["events"] = parse_event_map(values.get("events", {}))
        except ConfigurationError as exc:
            problems.extend(exc.problems)
            values["events"] = {}
        for key in ("allowed_environments", "secret_key_fallbacks", "trusted_proxies",
                    "allowed_origins"):
            if key in values:
                try:
                    values[key] = _as_tuple(values[key])
                except TypeError:
                    problems.append(f"{key} must be a list of strings (or one comma-separated).")
                    del values[key]
        try:
            settings = cls(**values)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
        except TypeError as exc:  # wrong value type for a field
            problems.append(str(exc))
        if problems:
            raise ConfigurationError(problems)
        return settings


def normalize_key(key: str) -> str:
    """``pixelId`` / ``PIXEL_ID`` / ``pixel_id`` → ``pixel_id``; guide aliases resolved."""
    snake = key.lower() if key.isupper() else re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()
    snake = snake.replace("-", "_")
    return _ALIASES.get(snake, snake)


def parse_event_map(raw: Any) -> dict[str, EventMapping]:
    """Parse ``{"purchase": "o87ni"}`` or the guide's ``{"purchase": {"eventId": ..., ...}}``."""
    if isinstance(raw, Mapping) and all(isinstance(v, EventMapping) for v in raw.values()):
        return dict(raw)
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            "events must be a mapping like {'purchase': {'eventId': 'o87ni', 'label': 'Purchase'}}."
        )
    events: dict[str, EventMapping] = {}
    problems: list[str] = []
    for name, spec in raw.items():
        if isinstance(spec, str):
            events[name] = EventMapping(name=name, event_id=spec)
        elif isinstance(spec, Mapping):
            spec_keys = {normalize_key(str(k)): v for k, v in spec.items()}
            unknown = set(spec_keys) - {"event_id", "label"}
            if unknown:
                problems.append(
                    f"event {name!r} has unknown keys {sorted(unknown)}: use 'eventId' and 'label'."
                )
            events[name] = EventMapping(
                name=name,
                event_id=str(spec_keys.get("event_id") or ""),
                label=spec_keys.get("label"),
            )
        else:
            problems.append(
                f"event {name!r} must map to an event id string or "
                "{'eventId': ..., 'label': ...}."
            )
    if problems:
        raise ConfigurationError(problems)
    return events


def _as_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    items = tuple(value)
    if not all(isinstance(v, str) for v in items):
        raise TypeError("not a list of strings")
    return items
