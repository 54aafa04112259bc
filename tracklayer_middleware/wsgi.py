"""``TrackLayerWSGIMiddleware``: the WSGI shell around ``RequestGateway``.

The app's response iterable is wrapped (like werkzeug's ``ClosingIterator``): iteration and
``len()`` pass through, and ``close()`` — which the server calls once the response was sent,
or abandoned — closes the app's iterable and then hands the request's conversions off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .gateway import MAX_BODY, RequestGateway, engine_from
from .tracker import Tracker, activate, deactivate

if TYPE_CHECKING:
    from .engine import TrackLayer
    from .settings import TrackLayerSettings

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class TrackLayerWSGIMiddleware:
    """Landing capture, the attribution endpoint and after-response hand-off for a WSGI app.

    ``TrackLayerWSGIMiddleware(app, engine)``, or ``TrackLayerWSGIMiddleware(app,
    settings=...)`` to build the engine (reachable as ``.engine``). Views reach the
    request's tracker as ``environ["tracklayer.tracker"]`` or ``current_tracker()``.
    """

    def __init__(
        self,
        app: WSGIApp,
        engine: TrackLayer | None = None,
        *,
        settings: TrackLayerSettings | Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.engine = engine_from(engine, settings)
        self.gateway = RequestGateway(self.engine)

    def __repr__(self) -> str:
        return f"TrackLayerWSGIMiddleware({self.app!r}, {self.engine!r})"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        gateway = self.gateway
        if gateway.is_endpoint(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")):
            return self._answer_endpoint(EnvironFacts(environ), start_response)
        cookies: tuple[str, ...] = ()
        tracker = gateway.plain(environ.get("QUERY_STRING", ""), environ.get("HTTP_COOKIE"))
        if tracker is None:
            tracker, cookies = gateway.open(EnvironFacts(environ))
        environ["tracklayer.tracker"] = tracker
        response = ClosingResponse(gateway, tracker, start_response, cookies)
        try:
            iterable = self.app(environ, response.start_response)
        except BaseException as exc:
            response.end(complete=False, error=exc)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if (
            isinstance(file_wrapper, type)
            and isinstance(iterable, file_wrapper)
            and not tracker.has_pending
        ):
            # A file (send_file, whitenoise) with nothing to hand off: keep the server's
            # sendfile path, which only works on its own wrapper type.
            response.end(complete=True, error=None)
            return iterable
        return response.wrap(iterable)

    def _answer_endpoint(
        self, facts: EnvironFacts, start_response: StartResponse
    ) -> Iterable[bytes]:
        response = self.gateway.check_endpoint(facts)
        if response is None:
            response = self.gateway.answer_endpoint(facts, _read_body(facts.environ))
        status_line = f"{response.status} {HTTPStatus(response.status).phrase}"
        start_response(status_line, list(response.headers))
        return [response.body]


class ClosingResponse:
    """One request's response, from the app's ``start_response`` to the server's ``close()``.

    Built before the app runs: the tracker is ``current_tracker()`` from then on, and
    ``start_response`` (what the app is given) records the status and adds the landing
    cookie. ``wrap()`` takes the app's iterable: iteration and ``len()`` pass through, and
    ``close()`` closes it, then hands the conversions off (status < 500, no app failure) or
    drops them. One object per request, because this is on every page view's path.
    """

    __slots__ = (
        "_closed",
        "_complete",
        "_cookies",
        "_error",
        "_gateway",
        "_iterable",
        "_start_response",
        "_status",
        "_token",
        "tracker",
    )

    def __init__(
        self,
        gateway: RequestGateway,
        tracker: Tracker,
        start_response: StartResponse,
        cookies: tuple[str, ...],
    ) -> None:
        self._gateway = gateway
        self.tracker = tracker
        self._start_response = start_response
        self._cookies = cookies
        self._iterable: Iterable[bytes] = ()
        self._status: int | None = None  # set by start_response, possibly only when iterated
        self._complete = False
        self._error: BaseException | None = None
        self._closed = False
        self._token = activate(tracker)

    def start_response(
        self, status_line: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Any:
        """The app's ``start_response``: the server's, plus status and cookie bookkeeping."""
        code = self._status = int(status_line.split(" ", 1)[0])
        if self._cookies and code < 500:
            app_cookies = (v for k, v in headers if k.lower() == "set-cookie")
            if not self._gateway.app_set_cookie(app_cookies):
                headers = [*headers, *(("Set-Cookie", value) for value in self._cookies)]
        return self._start_response(status_line, headers, exc_info)

    def wrap(self, iterable: Iterable[bytes]) -> ClosingResponse:
        """Take the app's response iterable; returns ``self`` for the server."""
        self._iterable = iterable
        if hasattr(iterable, "__len__"):
            # Same slots, one more method: servers test the type for __len__.
            self.__class__ = SizedClosingResponse
        return self

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._iterable
        except Exception as exc:
            self._error = exc
            raise
        self._complete = True

    def close(self) -> None:
        """Close the app's iterable, then hand off (status < 500, no app failure) or drop."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterable, "close", None)
        try:
            if close is not None:
                close()
        except Exception as exc:
            self._error = self._error or exc
            raise
        finally:
            self.end(complete=self._complete, error=self._error)

    def end(self, *, complete: bool, error: BaseException | None) -> None:
        """Leave the tracker's context; hand off (status < 500, no app failure) or drop."""
        deactivate(self._token)
        gateway = self._gateway
        conversions = gateway.finish(
            self.tracker, status=self._status, complete=complete, error=error
        )
        if conversions:
            gateway.handoff(self.tracker, conversions)


class SizedClosingResponse(ClosingResponse):
    """A ``ClosingResponse`` whose app iterable has a length (servers use it for
    Content-Length and single-write responses)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]


def _read_body(environ: Environ) -> bytes:
    """The request body, at most ``MAX_BODY + 1`` bytes; empty when it cannot be delimited.

    ``check_endpoint`` already refused a malformed or too large ``Content-Length``.
    """
    length = environ.get("CONTENT_LENGTH")
    if length:
        limit = min(int(length), MAX_BODY + 1)
    elif environ.get("wsgi.input_terminated"):  # chunked, and the server marks the end
        limit = MAX_BODY + 1
    else:
        return b""
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class EnvironFacts:
    """``RequestFacts`` of a WSGI environ (which is also what ``consent_resolver`` receives)."""

    __slots__ = ("environ",)

    def __init__(self, environ: Environ) -> None:
        self.environ = environ

    @property
    def method(self) -> str:
        """Upper-case HTTP method."""
        return str(self.environ.get("REQUEST_METHOD", "GET")).upper()

    @property
    def scheme(self) -> str:
        """``wsgi.url_scheme``."""
        return str(self.environ.get("wsgi.url_scheme", "http"))

    @property
    def path(self) -> str:
        """``SCRIPT_NAME`` + ``PATH_INFO``: the path the browser asked for."""
        return str(self.environ.get("SCRIPT_NAME", "")) + str(self.environ.get("PATH_INFO", ""))

    @property
    def query_string(self) -> str:
        """``QUERY_STRING``."""
        return str(self.environ.get("QUERY_STRING", ""))

    @property
    def host(self) -> str:
        """The Host header, else ``SERVER_NAME:SERVER_PORT``."""
        host = self.environ.get("HTTP_HOST")
        if host:
            return str(host)
        return f"{self.environ.get('SERVER_NAME', '')}:{self.environ.get('SERVER_PORT', '')}"

    @property
    def peer(self) -> str | None:
        """``REMOTE_ADDR``."""
        peer = self.environ.get("REMOTE_ADDR")
        return str(peer) if peer else None

    @property
    def native(self) -> Environ:
        """The environ itself."""
        return self.environ

    def header(self, name: str) -> str | None:
        """A header by lower-case name, from its CGI-style environ key."""
        if name in ("content-type", "content-length"):
            key = name.upper().replace("-", "_")
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        value = self.environ.get(key)
        return str(value) if value else None
