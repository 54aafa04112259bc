"""A non-landing request (no ``twclid``, no attribution cookie) with and without the middleware.

This is the request almost every visitor makes; the middleware must not be noticeable on it.
The app is a small real framework app (Starlette routing / Flask), called in-process. Two
more cases bound what is possible: the *floor*, a do-nothing middleware doing only what any
middleware that acts after the response must do (ASGI: wrap ``send``; WSGI: wrap the response
iterable for ``close()``), and the *contract floor*, that plus what DESIGN.md asks of every
request: a ``Tracker`` reachable from the scope/environ and as ``current_tracker()``.
"""

from __future__ import annotations

from . import apps
from .drive import ASGIApp, ASGIRunner, WSGIApp, asgi_scope, wsgi_environ, wsgi_per_request
from .floors import NullASGIMiddleware, NullWSGIMiddleware
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
