"""``TrackLayerMiddleware``: the pure ASGI shell around ``RequestGateway``.

Modelled on Starlette's ``SessionMiddleware``: no ``BaseHTTPMiddleware`` (which breaks
streaming, background tasks and context variables); one ``send`` wrapper that adds the
attribution cookie to the response start and, once the last body message was passed on,
hands the queued conversions off. What is converted later (background tasks) is handed off
when the app returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .gateway import MAX_BODY, RequestGateway, engine_from
from .tracker import Tracker, activate, deactivate

if TYPE_CHECKING:
    from .engine import TrackLayer
    from .settings import TrackLayerSettings


class TrackLayerMiddleware:
    """Landing capture, the attribution endpoint and after-response hand-off for an ASGI app.

    ``TrackLayerMiddleware(app, engine)``, or ``TrackLayerMiddleware(app, settings=...)`` (a
    ``TrackLayerSettings`` or a mapping ``from_mapping()`` accepts) to build the engine
    (reachable as ``.engine``). Explicit parameters keep ``Middleware(TrackLayerMiddleware,
    engine=...)`` type-checkable. Views reach the request's tracker as
    ``request.state.tracker``, ``scope["tracklayer.tracker"]`` or ``current_tracker()``.
    Lifespan and websocket scopes pass straight through.
    """

    def __init__(
        self,
        app: ASGIApp,
        engine: TrackLayer | None = None,
        *,
        settings: TrackLayerSettings | Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.engine = engine_from(engine, settings)
        self.gateway = RequestGateway(self.engine)

    def __repr__(self) -> str:
        return f"TrackLayerMiddleware({self.app!r}, {self.engine!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gateway = self.gateway
        if gateway.is_endpoint(scope["path"]):
            await self._answer_endpoint(ScopeFacts(scope), receive, send)
            return
        cookies: tuple[str, ...] = ()
        tracker = gateway.plain(scope["query_string"].decode("latin-1"), _header(scope, b"cookie"))
        if tracker is None:
            tracker, cookies = gateway.open(ScopeFacts(scope))
        scope["tracklayer.tracker"] = tracker
        scope.setdefault("state", {})["tracker"] = tracker
        response = _Response(gateway, tracker, send, cookies)
        error: BaseException | None = None
        token = activate(tracker)
        try:
            await self.app(scope, receive, response.send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            deactivate(token)
            if tracker.has_pending:  # converted after the last body message, or never sent
                await response.hand_off(final=True, error=error)  # closes the tracker
            else:  # no coroutine for the common, empty case
                tracker.close()  # a later convert() (a thread the view started) hands off itself

    async def _answer_endpoint(self, facts: ScopeFacts, receive: Receive, send: Send) -> None:
        response = self.gateway.check_endpoint(facts)
        if response is None:
            body = await _read_body(receive)
            if body is None:
                return  # the client went away
            response = self.gateway.answer_endpoint(facts, body)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


class _Response:
    """One request's response as the app sends it: ``send`` (what the app is given) adds the
    landing cookie to a < 500 start and records the status; once the last body message was
    passed on it hands off what is queued; what is converted after that is handed off when
    the app returns."""

    __slots__ = ("_complete", "_cookies", "_gateway", "_send", "_status", "tracker")

    def __init__(
        self, gateway: RequestGateway, tracker: Tracker, send: Send, cookies: tuple[str, ...]
    ) -> None:
        self._gateway = gateway
        self.tracker = tracker
        self._send = send
        self._cookies = cookies
        self._status: int | None = None
        self._complete = False

    def send(self, message: Message) -> Awaitable[None]:
        """The app's ``send``: the server's own awaitable, unless there is a hand-off to add
        (a plain function, not a coroutine: no extra coroutine per message on every page)."""
        kind = message["type"]
        if kind == "http.response.start":
            status = self._status = message["status"]
            if self._cookies and status < 500:
                message = self._with_cookies(message)
        elif kind in ("http.response.body", "http.response.pathsend"):
            self._complete = not message.get("more_body", False)
            if self._complete and self.tracker.has_pending:
                return self._send_then_hand_off(message)
        return self._send(message)

    async def _send_then_hand_off(self, message: Message) -> None:
        await self._send(message)
        # The client has the whole response: commit what is queued now.
        await self.hand_off(final=False, error=None)

    def _with_cookies(self, message: Message) -> Message:
        headers = list(message.get("headers", ()))
        app_cookies = (v.decode("latin-1") for k, v in headers if k.lower() == b"set-cookie")
        if self._gateway.app_set_cookie(app_cookies):
            return message
        headers.extend((b"set-cookie", value.encode("latin-1")) for value in self._cookies)
        return {**message, "headers": headers}

    async def hand_off(self, *, final: bool, error: BaseException | None) -> None:
        """Give the queued conversions to the engine (off the event loop), or drop them."""
        gateway = self._gateway
        conversions = gateway.finish(
            self.tracker, status=self._status, complete=self._complete, error=error, final=final
        )
        if conversions:
            # The client has its response; a cancellation now must not lose the hand-off.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(gateway.handoff, self.tracker, conversions)


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, cut at ``MAX_BODY + 1`` bytes (enough to say "too large")."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_BODY or not message.get("more_body", False):
            return bytes(body[: MAX_BODY + 1])


class ScopeFacts:
    """``RequestFacts`` of an ASGI HTTP scope; a header is decoded only when asked for."""

    __slots__ = ("scope",)

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @property
    def method(self) -> str:
        """Upper-case HTTP method."""
        return str(self.scope["method"])

    @property
    def scheme(self) -> str:
        """``http`` or ``https`` as the server saw it."""
        return str(self.scope.get("scheme", "http"))

    @property
    def path(self) -> str:
        """The full request path."""
        return str(self.scope["path"])

    @property
    def query_string(self) -> str:
        """The raw query string."""
        query: bytes = self.scope.get("query_string", b"")
        return query.decode("latin-1")

    @property
    def host(self) -> str:
        """The Host header, else the server address."""
        host = self.header("host")
        if host:
            return host
        server = self.scope.get("server")
        return f"{server[0]}:{server[1]}" if server else ""

    @property
    def peer(self) -> str | None:
        """The client (or proxy) address."""
        client = self.scope.get("client")
        return str(client[0]) if client else None

    @property
    def native(self) -> HTTPConnection:
        """A Starlette ``HTTPConnection`` (``.headers``, ``.cookies``, ``.url``) for resolvers."""
        return HTTPConnection(self.scope)

    def header(self, name: str) -> str | None:
        """A header by lower-case name; repeated ones joined (cookies with ``; ``)."""
        # ASGI header names are lower-case (as Starlette assumes).
        return _header(self.scope, name.encode("latin-1"))


def _header(scope: Scope, wanted: bytes) -> str | None:
    """A header of ``scope`` by lower-case name; repeated ones joined (cookies with ``; ``)."""
    found: bytes | None = None
    for key, value in scope["headers"]:
        if key == wanted:
            if found is None:
                found = value
            else:
                found += (b"; " if wanted == b"cookie" else b", ") + value
    return None if found is None else found.decode("latin-1")
