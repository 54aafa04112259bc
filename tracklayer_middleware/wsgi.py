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
    from contextvars import Token

    from .engine import TrackLayer
    from .settings import TrackLayerSettings

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class TrackLayerWSGIMiddleware:
    """Landing capture, the attribution endpoint and after-response hand-off for a WSGI app.

    ``TrackLayerWSGIMiddleware(app, engine)``, or with ``settings=...`` / setting keywords to
    build the engine (reachable as ``.engine``). Views reach the request's tracker as
    ``environ["tracklayer.tracker"]`` or ``current_tracker()``.
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
        facts = EnvironFacts(environ)
        if gateway.is_endpoint(facts.path):
            return self._answer_endpoint(facts, start_response)
        tracker, cookies = gateway.open(facts)
        environ["tracklayer.tracker"] = tracker
        token = activate(tracker)
        status: list[int] = []  # set by start_response, possibly only during iteration

        def tracked_start(
            status_line: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Any:
            code = int(status_line.split(" ", 1)[0])
            status[:] = [code]
            if cookies and code < 500:
                app_cookies = (v for k, v in headers if k.lower() == "set-cookie")
                if not gateway.app_set_cookie(app_cookies):
                    headers = [*headers, *(("Set-Cookie", value) for value in cookies)]
            return start_response(status_line, headers, exc_info)

        try:
            iterable = self.app(environ, tracked_start)
        except BaseException as exc:
            _end_request(gateway, tracker, token, status, complete=False, error=exc)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if (
            isinstance(file_wrapper, type)
            and isinstance(iterable, file_wrapper)
            and not tracker.has_pending
        ):
            # A file (send_file, whitenoise) with nothing to hand off: keep the server's
            # sendfile path, which only works on its own wrapper type.
            _end_request(gateway, tracker, token, status, complete=True, error=None)
            return iterable
        response_class = SizedClosingResponse if hasattr(iterable, "__len__") else ClosingResponse
        return response_class(iterable, gateway, tracker, token, status)

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
    """The app's response iterable; ``close()`` ends the request and hands off conversions."""

    __slots__ = (
        "_closed",
        "_complete",
        "_error",
        "_gateway",
        "_iterable",
        "_status",
        "_token",
        "_tracker",
    )

    def __init__(
        self,
        iterable: Iterable[bytes],
        gateway: RequestGateway,
        tracker: Tracker,
        token: Token[Tracker | None],
        status: list[int],
    ) -> None:
        self._iterable = iterable
        self._gateway = gateway
        self._tracker = tracker
        self._token = token
        self._status = status
        self._complete = False
        self._error: BaseException | None = None
        self._closed = False

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
            _end_request(
                self._gateway,
                self._tracker,
                self._token,
                self._status,
                complete=self._complete,
                error=self._error,
            )


class SizedClosingResponse(ClosingResponse):
    """A ``ClosingResponse`` whose app iterable has a length (servers use it for
    Content-Length and single-write responses)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]


def _end_request(
    gateway: RequestGateway,
    tracker: Tracker,
    token: Token[Tracker | None],
    status: list[int],
    *,
    complete: bool,
    error: BaseException | None,
) -> None:
    deactivate(token)
    code = status[0] if status else None
    conversions = gateway.finish(tracker, status=code, complete=complete, error=error)
    if conversions:
        gateway.handoff(tracker, conversions)


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
