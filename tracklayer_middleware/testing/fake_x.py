"""``FakeXConversionsAPI``: a real HTTP server on 127.0.0.1 that answers like X's endpoint.

Use it in your own tests to exercise TrackLayer end to end without reaching X::

    from tracklayer_middleware.testing import FakeXConversionsAPI, FakeResponse

    def test_purchase_reaches_x(monkeypatch):
        with FakeXConversionsAPI(pixel_ids=["o1a2b"], token="test-token") as fake_x:
            monkeypatch.setenv("X_ADS_BEARER_TOKEN", "test-token")
            tracklayer = TrackLayer(pixel_id="o1a2b", api_base_url=fake_x.base_url, ...)
            fake_x.script(503, FakeResponse(429, headers={"Retry-After": "1"}))
            tracklayer.convert("purchase", conversion_id="ord_1", email="a@example.com")
            assert fake_x.wait_for(1, timeout=10)
            assert fake_x.accepted_ids()["ord_1"] == 1

It validates bodies the way X documents (see ``docs/testing.md`` and ``x_rules``), checks the
token, records every request, and can be scripted to fail, stall, drop the connection or
answer garbage. All methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace, TracebackType
from typing import Any

from .x_rules import check_body, event_id_of

_PATH_RE = re.compile(r"^/(?P<version>\d+)/measurement/conversions/(?P<pixel>[A-Za-z0-9]+)/?$")
_SECRET_HEADERS = frozenset({"authorization", "x-pixel-token"})

_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_PARAMETER", "The request is invalid."),
    401: ("AUTH_FAILED", "This request is not properly authenticated."),
    403: ("UNAUTHORIZED_ACCESS", "Tag access denied: this token may not send to this pixel."),
    404: ("NOT_FOUND", "The requested resource could not be found."),
    429: ("TOO_MANY_REQUESTS", "Rate limit exceeded."),
    500: ("INTERNAL_ERROR", "Internal error."),
    503: ("SERVICE_UNAVAILABLE", "Service unavailable, try again later."),
}


@dataclass(frozen=True)
class FakeResponse:
    """One scripted answer of the fake X (see ``FakeXConversionsAPI.script``).

    A scripted 2xx, and ``drop_after_read``, let the fake first process the request normally
    (validate and accept it, as X would), then replace X's answer: with ``status``/``body``/
    ``headers``, a ``malformed_body``, or a connection closed before answering (the case where
    X processed a batch but the client never heard). Any other scripted answer is given
    without processing. ``drop_connection`` closes the connection without processing.
    ``delay`` stalls the answer that many seconds (a client timeout); ``gate`` holds it until
    the test sets that event (a POST kept in flight, with no timing involved; see
    ``wait_for_arrivals``).
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] | None = None
    delay: float | None = None
    drop_connection: bool = False
    drop_after_read: bool = False
    malformed_body: bool = False
    gate: threading.Event | None = field(default=None, compare=False)

    @property
    def processes(self) -> bool:
        """True when the fake validates and accepts the request before this answer."""
        return self.drop_after_read or (200 <= self.status < 300 and not self.drop_connection)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, and what it answered (``status`` None: dropped).

    ``headers`` (lowercase names) keep the auth headers so tests can assert them;
    ``repr()`` and ``redacted_headers()`` hide them.
    """

    method: str
    path: str
    pixel_id: str | None
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    status: int | None
    client_port: int = 0  # the same port on two requests means a reused connection

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def conversions(self) -> list[dict[str, Any]]:
        """The body's ``conversions`` list (empty when the body is not X-shaped)."""
        body = self.json()
        items = body.get("conversions") if isinstance(body, dict) else None
        return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []

    @property
    def auth_scheme(self) -> str | None:
        """``bearer``, ``pixel_token``, ``oauth1`` or None, from the headers sent."""
        authorization = self.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            return "bearer"
        if authorization.startswith("OAuth "):
            return "oauth1"
        return "pixel_token" if "x-pixel-token" in self.headers else None

    def redacted_headers(self) -> dict[str, str]:
        """The headers with the secret ones replaced by ``***``."""
        return {k: "***" if k in _SECRET_HEADERS else v for k, v in self.headers.items()}


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FakeXConversionsAPI:
    """A local stand-in for ``POST /12/measurement/conversions/{pixel_id}``.

    ``pixel_ids``: pixels the account owns (None: any). Other pixels get
    ``unknown_pixel_status`` (404, or 403 to play "tag access denied").
    ``event_ids``: known Events Manager ids (None: any); others get 404.
    ``token``: the expected token (None: auth is not checked), sent per ``auth``:
    ``"bearer"`` (``Authorization: Bearer``) or ``"pixel_token"`` (``X-Pixel-Token``).
    ``auth="oauth1"`` checks an HMAC-SHA1 signature made with ``oauth1=(consumer_key,
    consumer_secret, access_token, access_token_secret)`` (needs ``oauthlib``).
    ``rate_limit``: conversions accepted per ``rate_limit_window`` seconds (None: no limit);
    answers then carry ``x-rate-limit-limit/-remaining/-reset`` and a batch over the budget
    gets 429 with ``Retry-After``.
    """

    def __init__(
        self,
        *,
        pixel_ids: Iterable[str] | None = ("o1a2b",),
        event_ids: Iterable[str] | None = None,
        token: str | None = "test-token",
        auth: str = "bearer",
        oauth1: tuple[str, str, str, str] | None = None,
        unknown_pixel_status: int = 404,
        api_version: str = "12",
        account_id: str = "18ce54d4x5t",
        rate_limit: int | None = None,
        rate_limit_window: float = 900.0,
    ) -> None:
        if auth not in ("bearer", "pixel_token", "oauth1"):
            raise ValueError(f"auth must be 'bearer', 'pixel_token' or 'oauth1', not {auth!r}.")
        if auth == "oauth1" and oauth1 is None:
            raise ValueError("auth='oauth1' needs oauth1=(key, secret, token, token_secret).")
        self.pixel_ids = None if pixel_ids is None else frozenset(pixel_ids)
        self.event_ids = None if event_ids is None else frozenset(map(event_id_of, event_ids))
        self.auth = auth
        self.unknown_pixel_status = unknown_pixel_status
        self.api_version = api_version
        self.account_id = account_id
        self.rate_limit = rate_limit
        self.rate_limit_window = rate_limit_window
        self._window_start = time.time()
        self._window_used = 0
        self._arrivals = 0
        self._gates: set[threading.Event] = set()
        self._token = token
        self._oauth1 = oauth1
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._script: list[FakeResponse] = []
        self._delay: float | None = None
        self._requests: list[RecordedRequest] = []
        self._accepted: list[dict[str, Any]] = []
        self._bugs: list[Exception] = []
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeXConversionsAPI:
        """Listen on a random port of 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the loop to notice
            name="fake-x-conversions-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end stalled answers and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._cond:
            gates = list(self._gates)
        for gate in gates:  # held answers end now (their connections are dropped)
            gate.set()
        if self._thread is not None and self._thread.is_alive():  # not so in a forked child
            server.shutdown()
        server.server_close()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> FakeXConversionsAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: pass it as ``api_base_url``."""
        if self._server is None:
            raise RuntimeError("FakeXConversionsAPI is not running: call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, pixel_id: str) -> str:
        """The full conversions endpoint of ``pixel_id`` on this fake."""
        return f"{self.base_url}/{self.api_version}/measurement/conversions/{pixel_id}"

    # ------------------------------------------------------------------ scripting
    def script(self, *responses: int | FakeResponse) -> None:
        """Queue answers for the next requests, in order (an int is a bare status)."""
        with self._cond:
            self._script.extend(
                r if isinstance(r, FakeResponse) else FakeResponse(status=r) for r in responses
            )

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests with ``status``."""
        self.script(*([status] * n))

    def set_token(self, token: str | None) -> None:
        """Expect another token from now on (rotation); None stops checking auth."""
        with self._cond:
            self._token = token

    @property
    def delay(self) -> float | None:
        """Seconds every answer is stalled (None: answer at once)."""
        with self._cond:
            return self._delay

    @delay.setter
    def delay(self, seconds: float | None) -> None:
        with self._cond:
            self._delay = seconds

    def reset(self) -> None:
        """Forget recorded requests and acceptances, pending scripts and the delay."""
        with self._cond:
            self._script.clear()
            self._requests.clear()
            self._accepted.clear()
            self._delay = None
            self._arrivals = 0
            self._window_start, self._window_used = time.time(), 0

    # ------------------------------------------------------------------ records
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Every conversion X accepted, in order; a resent one appears again (a copy)."""
        with self._cond:
            return list(self._accepted)

    def accepted_ids(self) -> Counter[str]:
        """``conversion_id`` → how many times it was accepted (X dedups repeats by it)."""
        with self._cond:
            return Counter(str(c.get("conversion_id")) for c in self._accepted)

    def received_ids(self) -> Counter[str]:
        """``conversion_id`` → how many times it arrived in any request, accepted or not."""
        return Counter(str(c.get("conversion_id")) for r in self.requests for c in r.conversions())

    @property
    def bugs(self) -> list[Exception]:
        """Exceptions raised inside the fake itself (answered as 500 ``FAKE_X_BUG``)."""
        with self._cond:
            return list(self._bugs)

    def wait_for(self, n_accepted: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n_accepted`` conversions were accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._accepted) >= n_accepted, timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests were answered (or dropped); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def wait_for_arrivals(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests arrived, answered or still held by a ``gate``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._arrivals >= n, timeout)

    # ------------------------------------------------------------------ serving
    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        match = _PATH_RE.match(handler.path.split("?", 1)[0])
        scripted = self._arrive()
        if not self._hold(scripted):
            handler.close_connection = True
            return
        answer = self._answer(handler, match, headers, body, scripted)
        record = RecordedRequest(
            method=handler.command,
            path=handler.path,
            pixel_id=match.group("pixel") if match else None,
            headers=headers,
            body=body,
            status=answer.status if answer else None,
            client_port=handler.client_address[1],
        )
        with self._cond:
            self._requests.append(record)
            self._cond.notify_all()
        if answer is None:
            handler.close_connection = True
            return
        handler.send_response(answer.status)
        for name, value in {"Content-Type": "application/json", **answer.headers}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer.body)))
        handler.end_headers()
        handler.wfile.write(answer.body)

    def _arrive(self) -> FakeResponse | None:
        """Count the arrival and take the next scripted answer, if any."""
        with self._cond:
            scripted = self._script.pop(0) if self._script else None
            if scripted is not None and scripted.gate is not None:
                self._gates.add(scripted.gate)
            self._arrivals += 1
            self._cond.notify_all()
            return scripted

    def _hold(self, scripted: FakeResponse | None) -> bool:
        """Stall for the delay and/or the gate; False when stop() cut it short."""
        with self._cond:
            delay = scripted.delay if scripted and scripted.delay is not None else self._delay
        stalled = bool(delay) and self._stopping.wait(delay)
        if scripted is not None and scripted.gate is not None:
            scripted.gate.wait()
            with self._cond:
                self._gates.discard(scripted.gate)
        return not (stalled or self._stopping.is_set())

    def _answer(
        self,
        handler: _Handler,
        match: re.Match[str] | None,
        headers: Mapping[str, str],
        body: bytes,
        scripted: FakeResponse | None,
    ) -> _Answer | None:
        """X's answer, or the scripted one (None: drop the connection)."""
        answer: _Answer | None = None
        if scripted is None or scripted.processes:
            try:
                answer = self._process(handler, match, headers, body)
            except Exception as exc:  # a bug in the fake must show, not look like a dropped line
                with self._cond:
                    self._bugs.append(exc)
                answer = _error(500, "FAKE_X_BUG", f"the fake X failed: {exc!r}")
        if scripted is None or (answer is not None and not 200 <= answer.status < 300):
            return answer  # unscripted, or X's real refusal of a batch the script let through
        if scripted.drop_connection or scripted.drop_after_read:
            return None
        return _scripted(scripted, answer)

    def _process(
        self,
        handler: _Handler,
        match: re.Match[str] | None,
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Answer:
        """X's real behaviour: route, authenticate, validate, accept."""
        if handler.command != "POST" or match is None:
            return _error(404, "NOT_FOUND", f"No route for {handler.command} {handler.path}.")
        if match.group("version") != self.api_version:
            return _error(404, "NOT_FOUND", f"API version {match.group('version')} not served.")
        if not self._authenticated(handler, headers):
            return _error(401, "AUTH_FAILED", "This request is not properly authenticated.")
        pixel_id = match.group("pixel")
        if self.pixel_ids is not None and pixel_id not in self.pixel_ids:
            status = self.unknown_pixel_status
            code, message = _DEFAULT_ERRORS.get(status, ("NOT_FOUND", "Not found."))
            if status == 404:
                message = f"Pixel {pixel_id} not found for this account."
            return _error(status, code, message)
        try:
            payload = json.loads(body)
        except ValueError:
            return _error(400, "INVALID_PARAMETER", "The body is not valid JSON.", "body")
        problem = check_body(payload, pixel_id)
        if problem is not None:
            return _Answer(400, json.dumps(problem.to_json()).encode())
        conversions: list[dict[str, Any]] = payload["conversions"]
        if self.event_ids is not None:
            for item in conversions:
                if event_id_of(item["event_id"]) not in self.event_ids:
                    return _error(
                        404,
                        "NOT_FOUND",
                        f"Event {item['event_id']} not found for pixel {pixel_id}.",
                        "event_id",
                    )
        with self._cond:
            limit_headers, over = self._spend_budget(len(conversions))
            if over:
                retry = limit_headers["x-rate-limit-reset"]
                answer = _error(429, "TOO_MANY_REQUESTS", "Rate limit exceeded.")
                retry_after = max(1, int(retry) - int(time.time()))
                answer.headers = {**limit_headers, "Retry-After": str(retry_after)}
                return answer
            self._accepted.extend(conversions)
            self._cond.notify_all()
        body = json.dumps(self._success(len(conversions))).encode()
        return _Answer(200, body, limit_headers)

    def _spend_budget(self, n: int) -> tuple[dict[str, str], bool]:
        """Rate-limit headers after taking ``n`` from the window's budget; True if over."""
        if self.rate_limit is None:
            return {}, False
        now = time.time()
        if now >= self._window_start + self.rate_limit_window:
            self._window_start, self._window_used = now, 0
        over = self._window_used + n > self.rate_limit
        if not over:
            self._window_used += n
        headers = {
            "x-rate-limit-limit": str(self.rate_limit),
            "x-rate-limit-remaining": str(max(0, self.rate_limit - self._window_used)),
            "x-rate-limit-reset": str(int(self._window_start + self.rate_limit_window) + 1),
        }
        return headers, over

    def _success(self, processed: int) -> dict[str, Any]:
        return {
            "request": {"params": {"account_id": self.account_id}},
            "data": {"conversions_processed": processed, "debug_id": uuid.uuid4().hex},
        }

    def _authenticated(self, handler: _Handler, headers: Mapping[str, str]) -> bool:
        with self._cond:
            token = self._token
        if self.auth == "oauth1":
            assert self._oauth1 is not None
            host = headers.get("host", "")
            return _oauth1_valid(
                handler.command, f"http://{host}{handler.path}", headers, self._oauth1
            )
        if token is None:
            return True
        if self.auth == "pixel_token":
            return headers.get("x-pixel-token") == token
        return headers.get("authorization") == f"Bearer {token}"

    def __repr__(self) -> str:
        state = self.base_url if self._server is not None else "stopped"
        pixels = "any" if self.pixel_ids is None else sorted(self.pixel_ids)
        return f"FakeXConversionsAPI({state}, pixels={pixels}, auth={self.auth!r})"


def _error(status: int, code: str, message: str, parameter: str | None = None) -> _Answer:
    error: dict[str, Any] = {"code": code, "message": message}
    if parameter is not None:
        error["parameter"] = parameter
    return _Answer(status, json.dumps({"errors": [error]}).encode())


def _scripted(scripted: FakeResponse, processed: _Answer | None) -> _Answer:
    if scripted.malformed_body:
        body = b"<html><body>Bad gateway</body></html>"
    elif isinstance(scripted.body, (bytes, str)):
        body = scripted.body.encode() if isinstance(scripted.body, str) else scripted.body
    elif scripted.body is not None:
        body = json.dumps(scripted.body).encode()
    elif processed is not None:
        body = processed.body
    else:
        code, message = _DEFAULT_ERRORS.get(
            scripted.status,
            ("SERVICE_UNAVAILABLE", "Error.") if scripted.status >= 500 else ("ERROR", "Error."),
        )
        body = _error(scripted.status, code, message).body
    return _Answer(scripted.status, body, dict(scripted.headers or {}))


def _oauth1_valid(
    method: str, url: str, headers: Mapping[str, str], creds: tuple[str, str, str, str]
) -> bool:
    from oauthlib.oauth1.rfc5849 import signature, utils  # type: ignore[import-untyped]

    consumer_key, consumer_secret, token, token_secret = creds
    authorization = headers.get("authorization", "")
    if not authorization.startswith("OAuth "):
        return False
    try:
        oauth = dict(utils.parse_authorization_header(authorization))
    except ValueError:
        return False
    if oauth.get("oauth_consumer_key") != consumer_key or oauth.get("oauth_token") != token:
        return False
    if oauth.get("oauth_signature_method") != "HMAC-SHA1":
        return False
    query = url.split("?", 1)[1] if "?" in url else ""
    params = signature.collect_parameters(uri_query=query, headers={"Authorization": authorization})
    base = signature.signature_base_string(
        method, signature.base_string_uri(url), signature.normalize_parameters(params)
    )
    signer = SimpleNamespace(client_secret=consumer_secret, resource_owner_secret=token_secret)
    expected: str = signature.sign_hmac_sha1_with_client(base, signer)
    return hmac.compare_digest(expected, utils.unescape(oauth.get("oauth_signature", "")))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeXConversionsAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and left is normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be tested
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per answer on loopback, 10x the fake's own work).
    disable_nagle_algorithm = True
    timeout = 30  # a stuck client cannot pin a thread forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._cond:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._cond:
            self.server.fake._connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read ``FakeXConversionsAPI.requests`` instead."""
