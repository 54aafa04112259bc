"""A non-landing request (no ``twclid``, no attribution cookie) with and without the middleware.

This is the request almost every visitor makes; the middleware must not be noticeable on it.
The app is a small real framework app (Starlette routing / Flask), called in-process. Two
more cases bound what is possible: the *floor*, a do-nothing middleware doing only what any
middleware that acts after the response must do (ASGI: wrap ``send``; WSGI: wrap the response
iterable for ``close()``), and the *contract floor*, that plus what DESIGN.md asks of every
request: a ``Tracker`` reachable from the scope/environ and as ``current_tracker()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tracklayer_middleware.tracker import Tracker, activate, deactivate

from . import apps
from .drive import ASGIApp, ASGIRunner, WSGIApp, asgi_scope, wsgi_environ, wsgi_per_request
from .harness import Result, Scale, Stats, Target, interleaved, paired_ratio

NAME_ASGI = "asgi"
NAME_WSGI = "wsgi"


def run_asgi(scale: Scale) -> list[Result]:
    """Starlette app vs the same app behind ``TrackLayerMiddleware``."""
    from tracklayer_middleware.asgi import TrackLayerMiddleware

    n = scale.pick(smoke=20, quick=3_000, full=10_000)
    bare = apps.starlette_app()
    tracked = TrackLayerMiddleware(bare, apps.engine())
    floor = NullASGIMiddleware(bare)
    contract = NullASGIMiddleware(bare, tracked.engine)
    scope = asgi_scope("/pricing")
    runner = ASGIRunner()
    cases: dict[str, ASGIApp] = {
        "bare": bare, "floor": floor, "contract": contract, "tracked": tracked
    }
    try:
        for app in cases.values():  # warm every path
            runner.per_request(app, scope, n // 10 + 1)
        samples = interleaved(
            {name: lambda app=app: runner.per_request(app, scope, n)  # type: ignore[misc]
             for name, app in cases.items()},
            scale.reps,
        )
    finally:
        runner.close()
    return _overhead_rows(NAME_ASGI, "ASGI", "Starlette app", samples)


def run_wsgi(scale: Scale) -> list[Result]:
    """Flask app vs the same app behind ``TrackLayerWSGIMiddleware``."""
    from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

    n = scale.pick(smoke=20, quick=3_000, full=10_000)
    bare = apps.flask_app()
    tracked = TrackLayerWSGIMiddleware(bare, apps.engine())
    floor = NullWSGIMiddleware(bare)
    contract = NullWSGIMiddleware(bare, tracked.engine)
    environ = wsgi_environ("/")
    cases: dict[str, WSGIApp] = {
        "bare": bare, "floor": floor, "contract": contract, "tracked": tracked
    }
    for app in cases.values():
        wsgi_per_request(app, environ, n // 10 + 1)
    samples = interleaved(
        {name: lambda app=app: wsgi_per_request(app, environ, n)  # type: ignore[misc]
         for name, app in cases.items()},
        scale.reps,
    )
    return _overhead_rows(NAME_WSGI, "WSGI", "Flask app", samples)


def _overhead_rows(name: str, kind: str, app: str, samples: dict[str, list[float]]) -> list[Result]:
    bare = samples["bare"]

    def row(case: str, suffix: str, figure: str, target: Target | None, why: str) -> Result:
        extra = Stats.of([(t - b) * 1e6 for t, b in zip(samples[case], bare, strict=True)])
        us = Stats.of(samples[case]).median * 1e6
        return Result(
            name=name + suffix,
            figure=figure,
            stats=paired_ratio(samples[case], bare),
            unit="x",
            target=target,
            baseline=f"{app}, no middleware",
            detail=f"{us:.1f} µs vs {Stats.of(bare).median * 1e6:.1f} µs "
            f"(+{extra.median:.2f} µs){why}",
        )

    return [
        row("tracked", "", f"non-landing request, {kind} middleware", Target("<=", 1.03),
            " per request"),
        row("floor", "_floor", f"floor: a do-nothing {kind} middleware", None,
            ": the least any after-response middleware costs"),
        row("contract", "_contract_floor",
            f"contract floor: the floor + a Tracker and current_tracker() ({kind})", None,
            ": the least a middleware giving every request its tracker costs"),
    ]


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
