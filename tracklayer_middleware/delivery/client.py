"""``XConversionsClient``: one POST of a batch to X's Conversions API, classified.

``send()`` never raises for anything the network or X does: every outcome becomes a
``SendResult`` whose ``kind`` the retry policy (``delivery.policy``) acts on. The client holds
one reusable ``httpx.Client`` (keep-alive), explicit timeouts, no redirects. The token is read
from the environment at each send and never appears in a repr, log line, exception or result.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from importlib import metadata
from types import TracebackType
from typing import Any, Literal

import httpx

from ..errors import DeliveryError
from ..settings import PIXEL_ID_RE, TrackLayerSettings
from .auth import MissingCredentialsError, auth_for

logger = logging.getLogger("tracklayer.delivery.client")

MAX_BATCH = 500
CONNECT_TIMEOUT_CAP = 5.0

SendKind = Literal[
    "ok",
    "invalid",
    "auth",
    "forbidden",
    "not_found",
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "ambiguous",
]

_STATUS_KINDS: dict[int, SendKind] = {
    400: "invalid",
    401: "auth",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    429: "rate_limited",
}


@dataclass(frozen=True)
class XError:
    """One entry of X's ``{"errors": [...]}`` answer."""

    code: str
    message: str
    parameter: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What one POST to X came to.

    ``kind`` is one of ``ok``, ``invalid`` (400 and other 4xx), ``auth`` (401, or no token
    set: then no request was made), ``forbidden`` (403), ``not_found`` (404),
    ``rate_limited`` (429), ``server_error`` (5xx), ``timeout``, ``connection`` (nothing
    reached X) and ``ambiguous`` (X may have processed the batch but the answer was lost or
    unreadable: resend with the same ``conversion_id``). ``detail`` is a short human
    explanation when X's own ``errors`` do not say it.
    """

    kind: SendKind
    status_code: int | None = None
    accepted: int = 0
    debug_id: str | None = None
    errors: tuple[XError, ...] = ()
    retry_after: float | None = None
    rate_limit_reset: float | None = None
    rate_limit_remaining: int | None = None
    latency_ms: float = 0.0
    detail: str | None = None

    @property
    def ok(self) -> bool:
        """True when X confirmed the batch (``conversions_processed`` >= 1)."""
        return self.kind == "ok"

    @property
    def first_error(self) -> XError | None:
        """X's first error, if it sent any."""
        return self.errors[0] if self.errors else None

    def describe(self) -> str:
        """One line for logs: kind, status, X's first error or the local detail."""
        parts = [
            self.kind if self.status_code is None else f"{self.kind} (HTTP {self.status_code})"
        ]
        error = self.first_error
        if error is not None:
            where = f" [{error.parameter}]" if error.parameter else ""
            parts.append(f"{error.code}: {error.message}{where}")
        if self.detail:
            parts.append(self.detail)
        if self.debug_id:
            parts.append(f"debug_id={self.debug_id}")
        return " — ".join(parts)


def _version() -> str:
    try:
        return metadata.version("tracklayer-middleware")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


USER_AGENT = f"tracklayer-middleware/{_version()}"


class XConversionsClient:
    """Sends batches of conversions (``Conversion.to_x()`` dicts) to X.

    One instance is meant to live as long as the sender: it keeps connections open.
    ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        settings: TrackLayerSettings,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._auth = auth_for(settings)
        self._http = httpx.Client(
            auth=self._auth,
            timeout=httpx.Timeout(
                settings.timeout_seconds,
                connect=min(CONNECT_TIMEOUT_CAP, settings.timeout_seconds),
            ),
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    def url(self, pixel_id: str | None = None) -> str:
        """The conversions endpoint of ``pixel_id`` (default: the settings' pixel)."""
        pixel = pixel_id or self.settings.pixel_id
        if not PIXEL_ID_RE.match(pixel):
            raise DeliveryError(f"pixel_id {pixel!r} is not a valid X pixel id.")
        base = self.settings.api_base_url.rstrip("/")
        return f"{base}/{self.settings.api_version}/measurement/conversions/{pixel}"

    def send(
        self, conversions: Sequence[Mapping[str, Any]], *, pixel_id: str | None = None
    ) -> SendResult:
        """POST ``{"conversions": [...]}`` (1..500 items) and classify the outcome.

        Raises ``DeliveryError`` only for misuse (empty or oversized batch, bad pixel id);
        network trouble and every answer of X come back as a ``SendResult``.
        """
        if not 1 <= len(conversions) <= MAX_BATCH:
            raise DeliveryError(
                f"a batch must hold 1 to {MAX_BATCH} conversions, got {len(conversions)}."
            )
        url = self.url(pixel_id)
        body = json.dumps({"conversions": list(conversions)}, separators=(",", ":"))
        started = time.perf_counter()
        try:
            with self._http.stream(
                "POST", url, content=body, headers={"Content-Type": "application/json"}
            ) as streamed:
                response = _read_within(streamed, started + self.settings.timeout_seconds)
        except MissingCredentialsError as exc:
            return SendResult(kind="auth", detail=str(exc))
        except httpx.RequestError as exc:
            result = SendResult(
                kind=_request_error_kind(exc),
                latency_ms=_ms_since(started),
                detail=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        else:
            result = _classify(response, _ms_since(started))
        logger.debug("POST %s (%d conversions): %s", url, len(conversions), result.describe())
        return result

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> XConversionsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"XConversionsClient(url={self.url()!r}, auth={self._auth!r})"


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _request_error_kind(exc: httpx.RequestError) -> SendKind:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    # The request went out and the answer was lost or came back undecodable (a corrupt
    # gzip body): X may have processed it.
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.DecodingError)):
        return "ambiguous"
    return "connection"


def _read_within(response: httpx.Response, deadline: float) -> httpx.Response:
    """The answer read in full by ``deadline`` (``timeout_seconds`` is the TOTAL time of a
    POST, while httpx's timeouts are per read: an answer trickled byte by byte would hold
    the sender past its lease), as a plain response; ``ReadTimeout`` past the deadline."""
    if response.is_stream_consumed:  # an in-memory transport already read it
        return response
    chunks = []
    for chunk in response.iter_raw():  # still encoded: the new response decodes it once
        chunks.append(chunk)
        if time.perf_counter() > deadline:
            raise httpx.ReadTimeout("X's answer exceeded timeout_seconds", request=response.request)
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=b"".join(chunks),
        request=response.request,
    )


def _classify(response: httpx.Response, latency_ms: float) -> SendResult:
    status = response.status_code
    payload = _json_or_none(response)
    data = payload.get("data") if isinstance(payload, dict) else None
    data = data if isinstance(data, dict) else {}
    common: dict[str, Any] = {
        "status_code": status,
        "latency_ms": latency_ms,
        "errors": _errors(payload),
        "debug_id": _str_or_none(data.get("debug_id")),
        "retry_after": parse_retry_after(response.headers.get("retry-after"), time.time()),
        "rate_limit_reset": _rate_limit_reset(response.headers),
        "rate_limit_remaining": _rate_limit_remaining(response.headers),
    }
    if 200 <= status < 300:
        processed = data.get("conversions_processed")
        if isinstance(processed, int) and not isinstance(processed, bool) and processed >= 1:
            return SendResult(kind="ok", accepted=processed, **common)
        detail = (
            "X answered 2xx with an unreadable body"
            if payload is None
            else f"X answered 2xx but conversions_processed={processed!r}"
        )
        return SendResult(kind="ambiguous", detail=detail + "; resend with the same ids.", **common)
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        return SendResult(
            kind="not_found",
            detail=f"X redirected to {location}: check api_base_url (redirects are not followed).",
            **common,
        )
    if status >= 500 or status < 200:
        return SendResult(kind="server_error", **common)
    return SendResult(kind=_STATUS_KINDS.get(status, "invalid"), **common)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _errors(payload: Any) -> tuple[XError, ...]:
    raw = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        return ()
    return tuple(
        XError(
            code=str(item.get("code") or "UNKNOWN"),
            message=str(item.get("message") or ""),
            parameter=_str_or_none(item.get("parameter")),
        )
        for item in raw
        if isinstance(item, dict)
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    ``now`` is the current epoch time (an HTTP-date is relative to it). A date in the past
    gives 0; garbage gives None.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


def _header_numbers(headers: httpx.Headers, suffix: str) -> list[float]:
    numbers = []
    for prefix in ("x-rate-limit-", "x-account-rate-limit-"):
        raw = headers.get(prefix + suffix)
        if raw is None:
            continue
        try:
            number = float(raw.strip())
        except ValueError:
            continue
        if math.isfinite(number):
            numbers.append(number)
    return numbers


def _rate_limit_reset(headers: httpx.Headers) -> float | None:
    """The later of the app's and the account's reset epochs."""
    numbers = _header_numbers(headers, "reset")
    return max(numbers) if numbers else None


def _rate_limit_remaining(headers: httpx.Headers) -> int | None:
    """The tighter of the app's and the account's remaining budgets."""
    numbers = _header_numbers(headers, "remaining")
    return int(min(numbers)) if numbers else None
