"""Hand-rolled in-process request loops: an app called directly, no sockets, no HTTP client.

An HTTP client in the loop (even httpx's ASGI transport) costs more than the middleware
being measured and adds its own noise; these loops cost a dict copy and two no-op awaits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from .apps import HEADERS, OTHER_COOKIES

ASGIApp = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def asgi_scope(path: str, cookie: str = OTHER_COOKIES) -> dict[str, Any]:
    """An HTTP GET scope as uvicorn builds it, with browser-like headers."""
    raw_path, _, query = path.partition("?")
    headers = [(k.encode(), v.encode()) for k, v in HEADERS]
    headers.append((b"cookie", cookie.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": headers,
    }


class ASGIRunner:
    """Runs ``n`` requests of one scope through an ASGI app on a private event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.last_start: dict[str, Any] | None = None

    def close(self) -> None:
        """Close the event loop."""
        self.loop.close()

    def per_request(self, app: ASGIApp, scope: dict[str, Any], n: int) -> float:
        """Seconds per request over ``n`` requests."""
        return self.loop.run_until_complete(self._loop(app, scope, n))

    def per_request_each(self, app: ASGIApp, scopes: list[dict[str, Any]]) -> float:
        """Seconds per request over one request per scope."""
        return self.loop.run_until_complete(self._each(app, scopes))

    async def _each(self, app: ASGIApp, scopes: list[dict[str, Any]]) -> float:
        async def receive() -> dict[str, Any]:
            return _REQUEST

        async def send(message: dict[str, Any]) -> None:
            pass

        start = time.perf_counter()
        for scope in scopes:
            await app(dict(scope), receive, send)
        return (time.perf_counter() - start) / len(scopes)

    async def _loop(self, app: ASGIApp, scope: dict[str, Any], n: int) -> float:
        async def receive() -> dict[str, Any]:
            return _REQUEST

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.last_start = message

        start = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - start) / n

    def set_cookie(self, app: ASGIApp, scope: dict[str, Any]) -> str:
        """The first ``name=value`` the app sets in answer to ``scope``."""
        self.per_request(app, scope, 1)
        assert self.last_start is not None
        for key, value in self.last_start["headers"]:
            if key.lower() == b"set-cookie":
                return str(value.decode("latin-1").partition(";")[0])
        raise AssertionError("the app set no cookie")


def wsgi_environ(path: str, cookie: str = OTHER_COOKIES) -> dict[str, Any]:
    """A WSGI environ for a GET of ``path``, as gunicorn builds it."""
    import io
    import sys

    raw_path, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": raw_path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "HTTP_COOKIE": cookie,
    }
    for key, value in HEADERS:
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    return environ


def wsgi_per_request(app: WSGIApp, environ: dict[str, Any], n: int) -> float:
    """Seconds per request over ``n`` requests, consuming and closing each response."""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    start = time.perf_counter()
    for _ in range(n):
        response = app(dict(environ), start_response)
        for _chunk in response:
            pass
        close = getattr(response, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - start) / n
