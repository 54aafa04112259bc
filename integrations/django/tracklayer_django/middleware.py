"""``tracklayer_django.middleware.TrackLayerMiddleware``: the core gateway, adapted to Django.

Sync and async capable (the model is django-cors-headers): under ASGI an async view runs
without a thread hop; only a configured ``consent_resolver`` (your code, which may read the
session from the database) is called through ``sync_to_async``.

Per request: the attribution endpoint is answered here (before any view, so CSRF middleware
never sees it; its protection is the gateway's Origin check), a landing ``?twclid=`` sets the
signed cookie, and ``request.tracker`` is set. The queued conversions are handed off when
Django closes the response, which its WSGI server / ASGI handler do after the last byte was
sent (``response.close()``); a streamed body that fails part-way drops them, as a 5xx does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from http.cookies import SimpleCookie
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import DisallowedHost
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)

from tracklayer_middleware.gateway import MAX_BODY, RequestGateway
from tracklayer_middleware.tracker import Tracker, activate, deactivate

from .conf import conf
from .engine import get_engine


class TrackLayerMiddleware:
    """Landing capture, the attribution endpoint, ``request.tracker``, after-response hand-off."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        # A broken config fails at start-up; the engine is built on the first request, in the
        # serving process (not in a pre-forking server's master).
        conf.build()
        self._gateway: RequestGateway | None = None

    def __repr__(self) -> str:
        return f"<TrackLayerMiddleware get_response={self.get_response!r}>"

    @property
    def gateway(self) -> RequestGateway:
        """The gateway of the current engine (rebuilt when settings changed, e.g. in tests)."""
        engine = get_engine()
        gateway = self._gateway
        if gateway is None or gateway.engine is not engine:
            gateway = self._gateway = RequestGateway(engine)
        return gateway

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        gateway = self.gateway
        facts = DjangoFacts(request)
        if gateway.is_endpoint(request.path):
            return answer_endpoint(gateway, facts, request)
        tracker, cookies = gateway.open(facts)
        request.tracker = tracker  # type: ignore[attr-defined]
        token = activate(tracker)
        try:
            response = self.get_response(request)
        finally:
            deactivate(token)
        return finish_response(gateway, tracker, cookies, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        gateway = self.gateway
        facts = DjangoFacts(request)
        if gateway.is_endpoint(request.path):
            return answer_endpoint(gateway, facts, request)
        if gateway.settings.consent_resolver is None:
            tracker, cookies = gateway.open(facts)
        else:
            tracker, cookies = await sync_to_async(gateway.open)(facts)
        request.tracker = tracker  # type: ignore[attr-defined]
        token = activate(tracker)
        try:
            response = await self.get_response(request)
        finally:
            deactivate(token)
        return finish_response(gateway, tracker, cookies, response)


def answer_endpoint(
    gateway: RequestGateway, facts: DjangoFacts, request: HttpRequest
) -> HttpResponse:
    """The attribution endpoint's answer as a Django response (no view is called)."""
    answer = gateway.check_endpoint(facts)
    if answer is None:
        # At most one byte past the limit: enough to answer 413 without reading a huge body.
        answer = gateway.answer_endpoint(facts, request.read(MAX_BODY + 1))
    response = HttpResponse(answer.body, status=answer.status)
    cookies = []
    for name, value in answer.headers:
        if name == "set-cookie":
            cookies.append(value)
        else:
            response.headers[name] = value
    _set_cookies(response, cookies)
    return response


def finish_response(
    gateway: RequestGateway,
    tracker: Tracker,
    cookies: tuple[str, ...],
    response: HttpResponseBase,
) -> HttpResponseBase:
    """Add the landing cookie and arrange the hand-off for when Django closes the response."""
    if cookies and response.status_code < 500:
        app_cookies = (morsel.OutputString() for morsel in response.cookies.values())
        if not gateway.app_set_cookie(app_cookies):
            _set_cookies(response, cookies)
    # FileResponse is left alone: rewrapping its content would disable the server's sendfile.
    if isinstance(response, StreamingHttpResponse) and not isinstance(response, FileResponse):
        outcome = _Outcome(complete=False)
        content = response.streaming_content
        response.streaming_content = (
            outcome.watch_async(content)  # type: ignore[arg-type]
            if response.is_async
            else outcome.watch(content)  # type: ignore[arg-type]
        )
    elif not tracker.pending:
        tracker.close()  # nothing to hand off; a late convert() from a thread hands off itself
        return response
    else:
        outcome = _Outcome(complete=True)

    def hand_off() -> None:
        conversions = gateway.finish(
            tracker, status=response.status_code, complete=outcome.complete, error=outcome.error
        )
        if conversions:
            gateway.handoff(tracker, conversions)

    # Django runs these in response.close(), after the server sent the last byte. A stream
    # that breaks is never closed by Django's ASGI handler: it ends the request at once.
    outcome.on_error = hand_off
    response._resource_closers.append(hand_off)  # type: ignore[attr-defined]
    return response


class _Outcome:
    """Whether a streamed body was sent to its end, or which error cut it."""

    def __init__(self, *, complete: bool) -> None:
        self.complete = complete
        self.error: BaseException | None = None
        self.on_error: Callable[[], None] | None = None

    def _failed(self, exc: BaseException) -> None:
        self.error = exc
        if self.on_error is not None:
            self.on_error()

    def watch(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from chunks
        except BaseException as exc:
            self._failed(exc)
            raise
        self.complete = True

    async def watch_async(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except BaseException as exc:
            self._failed(exc)
            raise
        self.complete = True


def _set_cookies(response: HttpResponseBase, set_cookie_values: Sequence[str]) -> None:
    jar: SimpleCookie = SimpleCookie()
    for value in set_cookie_values:
        jar.load(value)
    for name, morsel in jar.items():
        response.cookies[name] = morsel


class DjangoFacts:
    """``RequestFacts`` of a Django ``HttpRequest`` (Django decides the scheme and host)."""

    __slots__ = ("request",)

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @property
    def method(self) -> str:
        """Upper-case HTTP method."""
        return str(self.request.method)

    @property
    def scheme(self) -> str:
        """``https`` when ``request.is_secure()`` (``SECURE_PROXY_SSL_HEADER`` honoured)."""
        return str(self.request.scheme)

    @property
    def path(self) -> str:
        """The full path, script prefix included."""
        return self.request.path

    @property
    def query_string(self) -> str:
        """The raw query string."""
        return str(self.request.META.get("QUERY_STRING", ""))

    @property
    def host(self) -> str:
        """``request.get_host()`` (``ALLOWED_HOSTS`` applied; empty when disallowed)."""
        try:
            return self.request.get_host()
        except DisallowedHost:
            return ""

    @property
    def peer(self) -> str | None:
        """``REMOTE_ADDR``."""
        return self.request.META.get("REMOTE_ADDR")

    @property
    def native(self) -> HttpRequest:
        """The ``HttpRequest``, for ``consent_resolver``."""
        return self.request

    def header(self, name: str) -> str | None:
        """A request header by name."""
        value = self.request.headers.get(name)
        return None if value is None else str(value)
