"""``RequestGateway``: the request story both middlewares (and framework shells) share.

Framework-free. A shell describes its request through ``RequestFacts`` and applies what the
gateway decides:

- ``open()``: landing capture. Reads the attribution cookie, captures a new ``?twclid=``
  (last click wins), applies consent, and returns the request's ``Tracker`` plus the
  ``Set-Cookie`` values to add to the response (usually none).
- ``check_endpoint()`` / ``answer_endpoint()``: the browser's attribution report, answered
  without calling the app.
- ``finish()`` / ``handoff()``: after the response, which queued conversions go to the engine.

Requests without ``twclid`` in the query and without our cookie take the fast path: no
parsing, no cookie, no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus, urlsplit

from .attribution import Attribution, sanitize_landing_url, valid_twclid
from .consent import Consent
from .conversion import Conversion
from .engine import TrackLayer
from .errors import ConfigurationError
from .settings import TrackLayerSettings
from .tracker import Tracker

logger = logging.getLogger("tracklayer.middleware")

MAX_BODY = 8 * 1024
"""Largest attribution report body accepted (bytes); shells read at most one byte more."""

# What itsdangerous produces (base64url and '.'): nothing that could end or split a header.
_SAFE_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_.-]{1,3800}")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_UNKNOWN = Consent()
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() also accepts '²'


class RequestFacts(Protocol):
    """What a shell tells the gateway about one HTTP request."""

    @property
    def method(self) -> str:
        """Upper-case HTTP method."""

    @property
    def scheme(self) -> str:
        """``http`` or ``https`` as the server saw it (before any proxy header)."""

    @property
    def path(self) -> str:
        """The path the browser asked for (mount prefix included)."""

    @property
    def query_string(self) -> str:
        """The raw query string, without ``?``."""

    @property
    def host(self) -> str:
        """The ``Host`` header, or the server's own address when it is missing."""

    @property
    def peer(self) -> str | None:
        """The TCP peer's address (a proxy's, behind one), when known."""

    @property
    def native(self) -> Any:
        """The framework's request object, handed to ``consent_resolver``."""

    def header(self, name: str) -> str | None:
        """A request header by lower-case name (repeated ones joined), or ``None``."""


@dataclass(frozen=True)
class EndpointResponse:
    """A complete response of the attribution endpoint, for a shell to send as is."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class RequestGateway:
    """The request-side decisions of one engine, shared by the ASGI and WSGI middlewares."""

    def __init__(self, engine: TrackLayer) -> None:
        settings = engine.settings
        self.engine = engine
        self.settings = settings
        self.cookie_name = settings.cookie_name
        self.secure_cookie_name = f"__Host-{settings.cookie_name}"
        self._enabled = settings.enabled
        self._resolver = settings.consent_resolver
        self._trust_any_proxy = "*" in settings.trusted_proxies
        self._proxies = _parse_networks(p for p in settings.trusted_proxies if p != "*")
        self._allowed_origins = frozenset(_origin_of(o) for o in settings.allowed_origins)
        # Request trackers announce their hand-off, so flush() waits for it (see finish()).
        self._tracker = functools.partial(Tracker, engine, announce=True)

    def __repr__(self) -> str:
        path = self.settings.attribution_path
        return f"RequestGateway(cookie={self.cookie_name!r}, path={path!r})"

    # ------------------------------------------------------------------ landing
    def plain(self, query: str, cookies: str | None) -> Tracker | None:
        """The tracker of a request with no landing work, or ``None``: then call ``open()``.

        The fast path shells try first, from the raw query string and ``Cookie`` header
        alone: no ``twclid`` in the query, none of our cookies, no ``consent_resolver``.
        """
        if self._resolver is None and not (self._enabled and self._may_land(query, cookies)):
            return self._tracker()
        return None

    def _may_land(self, query: str, cookies: str | None) -> bool:
        return "twclid" in query or (cookies is not None and self.cookie_name in cookies)

    def open(self, facts: RequestFacts) -> tuple[Tracker, tuple[str, ...]]:
        """The request's tracker and the ``Set-Cookie`` values to add to a < 500 response."""
        consent = _UNKNOWN if self._resolver is None else self._resolve_consent(facts)
        if not self._enabled:
            return self._tracker(consent=consent), ()
        query = facts.query_string
        cookies = facts.header("cookie")
        if not self._may_land(query, cookies):
            return self._tracker(consent=consent), ()
        present, stored = self._read_cookie(cookies)
        if stored is not None:
            consent = stored.consent.merged(consent)  # what the site says now wins
        twclid = _landing_twclid(query)
        if not consent.storage_allowed(self.settings.consent_required):
            # The click may still attribute this request's conversions; it is not stored.
            clicked = self._capture(facts, twclid, consent) if twclid else None
            return (
                self._tracker(attribution=clicked, consent=consent),
                self._clear(present),
            )
        if twclid is None or (stored is not None and stored.twclid == twclid):
            return self._tracker(attribution=stored, consent=consent), ()
        attribution = self._capture(facts, twclid, consent)
        logger.debug("landing with a new click: attribution cookie set")
        return (
            self._tracker(attribution=attribution, consent=consent),
            self._set_cookie(attribution, self.is_secure(facts)),
        )

    def is_secure(self, facts: RequestFacts) -> bool:
        """Whether the cookie gets ``Secure`` and the ``__Host-`` prefix."""
        if self.settings.cookie_secure is not None:
            return self.settings.cookie_secure
        return self._scheme(facts) == "https"

    def _capture(self, facts: RequestFacts, twclid: str, consent: Consent) -> Attribution:
        url = f"{self._scheme(facts)}://{self._host(facts)}{facts.path}?{facts.query_string}"
        return Attribution.capture(twclid, url, consent)

    def _resolve_consent(self, facts: RequestFacts) -> Consent:
        resolver = self._resolver
        if resolver is None:
            return _UNKNOWN
        try:
            answer = resolver(facts.native)
            if answer is None or isinstance(answer, Consent):
                return answer or _UNKNOWN
            return Consent.from_json(answer)
        except Exception:
            # A broken resolver must not break the site; unknown consent is the safe reading.
            logger.exception("consent_resolver failed; treating consent as unknown")
            return _UNKNOWN

    def _read_cookie(self, header: str | None) -> tuple[tuple[str, ...], Attribution | None]:
        """(our cookie names present, the first valid attribution among them)."""
        if header is None:
            return (), None
        values = _our_cookies(header, (self.secure_cookie_name, self.cookie_name))
        for value in values.values():
            attribution = self.engine.codec.loads_cookie(value)
            if attribution is not None:
                return tuple(values), attribution
        return tuple(values), None

    def _set_cookie(self, attribution: Attribution, secure: bool) -> tuple[str, ...]:
        value = self.engine.codec.dumps_cookie(attribution)
        if not _SAFE_COOKIE_VALUE.fullmatch(value):
            logger.error("attribution cookie value has unsafe characters; cookie not set")
            return ()
        name = self.secure_cookie_name if secure else self.cookie_name
        return (_cookie_header(name, value, self.settings.cookie_max_age),)

    def _clear(self, names: Iterable[str]) -> tuple[str, ...]:
        return tuple(_cookie_header(name, "", 0) for name in names)

    # ------------------------------------------------------------------ attribution endpoint
    def is_endpoint(self, path: str) -> bool:
        """Whether ``path`` is the attribution endpoint (answered by the middleware)."""
        return path == self.settings.attribution_path

    def check_endpoint(self, facts: RequestFacts) -> EndpointResponse | None:
        """The endpoint's answer when it is decided before the body (method, origin, type,
        size), else ``None``: read at most ``MAX_BODY + 1`` bytes and call ``answer_endpoint``.
        """
        origin = facts.header("origin")
        cors = self._cors_headers(origin, facts)
        if facts.method == "OPTIONS" and cors:
            return EndpointResponse(
                204,
                (
                    *cors,
                    ("access-control-allow-methods", "POST"),
                    ("access-control-allow-headers", "content-type"),
                    ("access-control-max-age", "600"),
                ),
            )
        if facts.method != "POST":
            return _error(405, "use POST", (("allow", "POST"),))
        if not self._same_origin_or_allowed(origin, facts):
            return _error(403, "cross-site request refused: Origin is not this site", cors)
        content_type = (facts.header("content-type") or "").partition(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "send the report as application/json", cors)
        length = facts.header("content-length")
        if length is not None:
            if not _DIGITS.fullmatch(length.strip()):
                return _error(400, "invalid Content-Length", cors)
            if int(length) > MAX_BODY:
                return _error(413, f"body larger than {MAX_BODY} bytes", cors)
        return None

    def answer_endpoint(self, facts: RequestFacts, body: bytes) -> EndpointResponse:
        """The endpoint's answer once the body was read (at most ``MAX_BODY + 1`` bytes)."""
        cors = self._cors_headers(facts.header("origin"), facts)
        if len(body) > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY} bytes", cors)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "body is not valid JSON", cors)
        if not isinstance(data, dict):
            return _error(400, "body must be a JSON object", cors)
        twclid = data.get("twclid")
        if not isinstance(twclid, str) or not valid_twclid(twclid):
            return _error(400, "twclid must be 1-128 letters, digits, '_' or '-'", cors)
        landing_url = data.get("landingUrl")
        if landing_url is not None and not isinstance(landing_url, str):
            return _error(400, "landingUrl must be a string", cors)
        try:
            reported = Consent.from_json(data.get("consent"))
        except ValueError as exc:
            return _error(400, str(exc), cors)
        consent = _strictest(reported, self._resolve_consent(facts))
        headers = (*cors, ("cache-control", "no-store"))
        if not self.settings.enabled:
            return EndpointResponse(204, headers)
        secure = self.is_secure(facts)
        present, stored = self._read_cookie(facts.header("cookie"))
        if not consent.storage_allowed(self.settings.consent_required):
            own = self.secure_cookie_name if secure else self.cookie_name
            names = dict.fromkeys((*present, own))
            return EndpointResponse(204, (*headers, *_set_cookies(self._clear(names))))
        if stored is not None and stored.twclid == twclid:
            attribution = dataclasses.replace(
                stored,
                consent=stored.consent.merged(consent),
                landing_url=sanitize_landing_url(landing_url) or stored.landing_url,
            )
        else:
            attribution = Attribution.capture(twclid, landing_url, consent)
        cookie = self._set_cookie(attribution, secure)
        return EndpointResponse(204, (*headers, *_set_cookies(cookie)))

    def _cors_headers(self, origin: str | None, facts: RequestFacts) -> tuple[tuple[str, str], ...]:
        """CORS headers for an allowed cross-origin caller (``allowed_origins``), else none."""
        if origin is None or _origin_of(origin) == self._own_origin(facts):
            return ()
        if _origin_of(origin) not in self._allowed_origins:
            return ()
        return (
            # The normalized origin, never the raw header: it may carry CR/LF or tabs.
            ("access-control-allow-origin", _origin_of(origin)),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        )

    def _same_origin_or_allowed(self, origin: str | None, facts: RequestFacts) -> bool:
        # The endpoint's only CSRF defence (with the JSON content type, which forces a CORS
        # preflight cross-site). Browsers send Origin on every POST; Referer is the fallback
        # for old ones; a request with neither is refused.
        if origin is None:
            referer = facts.header("referer")
            if referer is None:
                return False
            origin = referer
        candidate = _origin_of(origin)
        if not candidate:  # "null", garbage
            return False
        return candidate == self._own_origin(facts) or candidate in self._allowed_origins

    # ------------------------------------------------------------------ proxies
    def _trusted(self, facts: RequestFacts) -> bool:
        if self._trust_any_proxy:
            return True
        if not self._proxies or facts.peer is None:
            return False
        try:
            address = ipaddress.ip_address(facts.peer)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    def _scheme(self, facts: RequestFacts) -> str:
        if facts.scheme != "https" and self._trusted(facts):
            forwarded = facts.header("x-forwarded-proto")
            if forwarded:
                return forwarded.split(",")[0].strip().lower()
        return facts.scheme

    def _host(self, facts: RequestFacts) -> str:
        if self._trusted(facts):
            forwarded = facts.header("x-forwarded-host")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return facts.host

    def _own_origin(self, facts: RequestFacts) -> str:
        return _origin_of(f"{self._scheme(facts)}://{self._host(facts)}")

    def app_set_cookie(self, set_cookie_values: Iterable[str]) -> bool:
        """Whether the app's own ``Set-Cookie`` headers already set our cookie (then we don't)."""
        ours = (self.cookie_name, self.secure_cookie_name)
        return any(value.partition("=")[0].strip() in ours for value in set_cookie_values)

    # ------------------------------------------------------------------ after the response
    def finish(
        self,
        tracker: Tracker,
        *,
        status: int | None,
        complete: bool,
        error: BaseException | None = None,
        final: bool = True,
    ) -> tuple[Conversion, ...]:
        """The conversions to hand off now that the response is over (the rest are dropped
        with a WARNING): none unless a status < 500 was sent and the app did not fail
        before the response was complete. A client that went away (``OSError``,
        cancellation) after a < 500 status is not a failure of the server.

        ``final=False`` takes the queue but leaves the tracker open (ASGI, at the last body
        message: code still running, like background tasks, may convert more).
        Conversions returned must be given to ``handoff()``, which settles the hand-off
        the tracker announced to ``TrackLayer.flush()``.
        """
        conversions = tracker.close() if final else tracker.take()
        if not conversions:
            return ()
        if status is None:
            reason = "no response was sent"
        elif status >= 500:
            reason = f"the response status was {status}"
        elif (
            error is not None
            and not complete
            and isinstance(error, Exception)
            and not isinstance(error, OSError)
        ):
            reason = f"the app raised {type(error).__name__} before the response was complete"
        else:
            return conversions
        self.engine.settle_handoff(tracker)
        logger.warning(
            "dropped %d conversion(s) (%s) because %s",
            len(conversions),
            ", ".join(f"{c.event} {c.conversion_id}" for c in conversions),
            reason,
        )
        return ()

    def handoff(self, tracker: Tracker, conversions: Sequence[Conversion]) -> None:
        """Give what ``finish(tracker)`` returned to the engine (commits it); never raises."""
        try:
            self.engine.handoff(conversions)
        except Exception:
            logger.exception("hand-off of %d conversion(s) failed", len(conversions))
        finally:
            self.engine.settle_handoff(tracker)


def engine_from(
    engine: TrackLayer | None, settings: TrackLayerSettings | Mapping[str, Any] | None
) -> TrackLayer:
    """The middleware's engine: the one given, or one built from ``settings``."""
    if engine is not None and settings is not None:
        raise ConfigurationError("pass either engine= or settings=, not both.")
    if engine is not None:
        return engine
    if settings is None:
        raise ConfigurationError(
            "the middleware needs engine=TrackLayer(...) or settings={...} (pixel_id, "
            "secret_key, events, ...)."
        )
    return TrackLayer(settings)


def _landing_twclid(query: str) -> str | None:
    """The query's valid ``twclid``; repeated with different values, none (ambiguous)."""
    values = {unquote_plus(value) for value in _raw_twclids(query)}
    if len(values) != 1:
        if values:
            logger.debug("ignoring landing: %d different twclid values", len(values))
        return None
    twclid = values.pop()
    if not valid_twclid(twclid):
        logger.debug("ignoring landing: twclid does not match the X click id pattern")
        return None
    return twclid


def _raw_twclids(query: str) -> Iterator[str]:
    """The query's ``twclid`` values, still encoded, found as ``parse_qsl`` finds them but
    without decoding the other parameters (landing URLs carry several ``utm_*``)."""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "twclid" or ("%" in key and unquote_plus(key) == "twclid"):
            yield value


def _our_cookies(header: str, names: tuple[str, ...]) -> dict[str, str]:
    """Our cookies in a ``Cookie`` header, in ``names`` order (first occurrence wins)."""
    found: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep and name in names and name not in found:
            found[name] = value.strip().strip('"')
    return {name: found[name] for name in names if name in found}


def _cookie_header(name: str, value: str, max_age: int) -> str:
    # Secure always goes with the __Host- prefix, which browsers require for it.
    secure = "; Secure" if name.startswith("__Host-") else ""
    return f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"


def _set_cookies(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple(("set-cookie", value) for value in values)


def _error(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> EndpointResponse:
    body = json.dumps({"error": message}).encode()
    fixed = (
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    )
    return EndpointResponse(status, (*headers, *fixed), body)


def _strictest(first: Consent, second: Consent) -> Consent:
    """Both signals read now: a denial from either wins, then a grant, else unknown."""

    def pick(a: bool | None, b: bool | None) -> bool | None:
        if a is False or b is False:
            return False
        return a if a is not None else b

    return Consent(
        pick(first.ad_storage, second.ad_storage), pick(first.ad_user_data, second.ad_user_data)
    )


def _origin_of(url: str) -> str:
    """``scheme://host[:port]`` in lower case with the default port dropped; ``""`` if none."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    netloc = parts.netloc.rpartition("@")[2].lower()
    if scheme not in _DEFAULT_PORTS or not netloc:
        return ""
    return f"{scheme}://{netloc.removesuffix(_DEFAULT_PORTS[scheme])}"


def _parse_networks(
    entries: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    problems = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            problems.append(
                f"trusted_proxies entry {entry!r} is not an IP address or network like "
                "'10.0.0.0/8' (or '*' for any peer)."
            )
    if problems:
        raise ConfigurationError(problems)
    return tuple(networks)
