"""A non-landing request (no ``twclid``, no attribution cookie) with and without the middleware.

This is the request almost every visitor makes; the middleware must not be noticeable on it.
The app is a small real framework app (Starlette routing / Flask), called in-process.
"""

from __future__ import annotations

from . import apps
from .drive import ASGIRunner, asgi_scope, wsgi_environ, wsgi_per_request
from .harness import Result, Scale, Stats, Target, interleaved, paired_ratio

NAME_ASGI = "asgi"
NAME_WSGI = "wsgi"


def run_asgi(scale: Scale) -> list[Result]:
    """Starlette app vs the same app behind ``TrackLayerMiddleware``."""
    from tracklayer_middleware.asgi import TrackLayerMiddleware

    n = scale.pick(smoke=20, quick=3_000, full=10_000)
    bare = apps.starlette_app()
    tracked = TrackLayerMiddleware(bare, apps.engine())
    scope = asgi_scope("/pricing")
    runner = ASGIRunner()
    try:
        runner.per_request(tracked, scope, n // 10 + 1)  # warm both paths
        runner.per_request(bare, scope, n // 10 + 1)
        samples = interleaved(
            {
                "bare": lambda: runner.per_request(bare, scope, n),
                "tracked": lambda: runner.per_request(tracked, scope, n),
            },
            scale.reps,
        )
    finally:
        runner.close()
    return [_overhead_row(NAME_ASGI, "non-landing request, ASGI middleware", "Starlette app",
                          samples["bare"], samples["tracked"])]


def run_wsgi(scale: Scale) -> list[Result]:
    """Flask app vs the same app behind ``TrackLayerWSGIMiddleware``."""
    from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

    n = scale.pick(smoke=20, quick=3_000, full=10_000)
    bare = apps.flask_app()
    tracked = TrackLayerWSGIMiddleware(bare, apps.engine())
    environ = wsgi_environ("/")
    wsgi_per_request(tracked, environ, n // 10 + 1)
    wsgi_per_request(bare, environ, n // 10 + 1)
    samples = interleaved(
        {
            "bare": lambda: wsgi_per_request(bare, environ, n),
            "tracked": lambda: wsgi_per_request(tracked, environ, n),
        },
        scale.reps,
    )
    return [_overhead_row(NAME_WSGI, "non-landing request, WSGI middleware", "Flask app",
                          samples["bare"], samples["tracked"])]


def _overhead_row(
    name: str, figure: str, app: str, bare: list[float], tracked: list[float]
) -> Result:
    bare_us = Stats.of(bare).scaled(1e6)
    tracked_us = Stats.of(tracked).scaled(1e6)
    added = Stats.of([(t - b) * 1e6 for t, b in zip(tracked, bare, strict=True)])
    return Result(
        name=name,
        figure=figure,
        stats=paired_ratio(tracked, bare),
        unit="x",
        target=Target("<=", 1.03),
        baseline=f"{app}, no middleware",
        detail=(
            f"{tracked_us.median:.1f} µs vs {bare_us.median:.1f} µs per request "
            f"(+{added.median:.2f} µs)"
        ),
    )
