"""The floors: middlewares that do only what any after-response middleware must, to measure
what no middleware of that kind can go below (in-process in ``middleware_overhead``, behind
real servers in ``e2e``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tracklayer_middleware.tracker import Tracker, activate, deactivate

from .drive import ASGIApp, WSGIApp


class NullASGIMiddleware:
    """Passes everything through, wrapping ``send`` as an after-response middleware must.

    Given an engine it is the *contract floor*: it also gives every request its ``Tracker``
    in the scope, ``request.state`` and ``current_tracker()``, and nothing else (no landing,
    no hand-off).
    """

    def __init__(self, app: ASGIApp, engine: Any = None) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            await send(message)

        if self.engine is None:
            await self.app(scope, receive, send_wrapper)
            return
        tracker = Tracker(self.engine, announce=True)
        scope["tracklayer.tracker"] = tracker
        scope.setdefault("state", {})["tracker"] = tracker
        token = activate(tracker)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            deactivate(token)


class NullWSGIMiddleware:
    """Passes everything through, wrapping the response to learn when it was sent.

    Given an engine it is the *contract floor*: it also gives every request its ``Tracker``
    in the environ and ``current_tracker()`` (left when the server closes the response, as a
    streamed body needs).
    """

    def __init__(self, app: WSGIApp, engine: Any = None) -> None:
        self.app = app
        self.engine = engine

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self.engine is None:
            return _Closing(self.app(environ, start_response))
        tracker = Tracker(self.engine, announce=True)
        environ["tracklayer.tracker"] = tracker
        token = activate(tracker)
        return _Closing(self.app(environ, start_response), lambda: deactivate(token))


class _Closing:
    __slots__ = ("_iterable", "_then")

    def __init__(self, iterable: Iterable[bytes], then: Callable[[], None] = lambda: None) -> None:
        self._iterable = iterable
        self._then = then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._iterable)

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()
        self._then()
