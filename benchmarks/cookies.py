"""The click cookie against Starlette's ``SessionMiddleware`` holding the same data.

Landing: ``GET /pricing?twclid=...&utm_*`` with no cookie yet. TrackLayer captures the
click and sets its signed cookie; the baseline view stores the same fields (twclid, landing
URL, capture time, consent, a random id) in ``request.session`` and ``SessionMiddleware``
signs it. Read: the next request carries the cookie; TrackLayer verifies it (and its
max-age) and the baseline view reads ``request.session``. The codec remembers values it
verified, so a returning visitor's page views (the same cookie again) skip the signature
check; the cold read (every request a cookie never seen before) is shown as an info row.
"""

from __future__ import annotations

from typing import Any

from . import apps
from .drive import ASGIApp, ASGIRunner, asgi_scope
from .harness import Result, Scale, Stats, Target, interleaved, paired_ratio

NAME_LANDING = "landing_cookie"
NAME_READ = "read_cookie"
NAME_READ_COLD = "read_cookie_cold"


def run_landing(scale: Scale) -> list[Result]:
    """A landing request that sets the cookie, TrackLayer vs the session baseline."""
    from tracklayer_middleware.asgi import TrackLayerMiddleware

    tracked = TrackLayerMiddleware(apps.starlette_app(), apps.engine())
    session = apps.session_app()
    ours = asgi_scope(apps.LANDING_PATH)
    theirs = asgi_scope("/session" + apps.LANDING_PATH)
    return [_compare(scale, NAME_LANDING, "landing request that sets the signed cookie",
                     (tracked, ours), (session, theirs))]


def run_read(scale: Scale) -> list[Result]:
    """A request carrying a valid cookie, TrackLayer vs the session baseline."""
    from tracklayer_middleware.asgi import TrackLayerMiddleware

    tracked = TrackLayerMiddleware(apps.starlette_app(), apps.engine())
    session = apps.session_app()
    runner = ASGIRunner()
    try:
        our_cookie = runner.set_cookie(tracked, asgi_scope(apps.LANDING_PATH))
        their_cookie = runner.set_cookie(session, asgi_scope("/session" + apps.LANDING_PATH))
    finally:
        runner.close()
    ours = asgi_scope("/pricing", f"{apps.OTHER_COOKIES}; {our_cookie}")
    theirs = asgi_scope("/session/read", f"{apps.OTHER_COOKIES}; {their_cookie}")
    return [
        _compare(scale, NAME_READ, "request that reads a valid cookie",
                 (tracked, ours), (session, theirs)),
        _cold_read(scale, tracked, session),
    ]


def _cold_read(scale: Scale, tracked: Any, session: ASGIApp) -> Result:
    """Every request carries a cookie this process never verified before."""
    import base64
    import json

    from itsdangerous import TimestampSigner

    from tracklayer_middleware.attribution import Attribution
    from tracklayer_middleware.consent import Consent

    n = scale.pick(smoke=20, quick=1_000, full=3_000)
    codec = tracked.engine.codec
    signer = TimestampSigner(apps.SECRET_KEY)
    url = "http://shop.example" + apps.LANDING_PATH

    def our_scopes() -> list[dict[str, Any]]:
        return [
            asgi_scope("/pricing", f"{apps.OTHER_COOKIES}; tl_attr=" + codec.dumps_cookie(
                Attribution.capture(apps.TWCLID, url, Consent(True, True))))
            for _ in range(n)
        ]

    def their_scopes() -> list[dict[str, Any]]:
        scopes = []
        for _ in range(n):
            data = json.dumps({"attribution": apps.click_data(apps.TWCLID, url)}).encode()
            value = signer.sign(base64.b64encode(data)).decode()
            scopes.append(asgi_scope("/session/read", f"{apps.OTHER_COOKIES}; session={value}"))
        return scopes

    runner = ASGIRunner()
    try:
        samples = interleaved(
            {
                "session": lambda: runner.per_request_each(session, their_scopes()),
                "tracked": lambda: runner.per_request_each(tracked, our_scopes()),
            },
            scale.reps,
        )
    finally:
        runner.close()
    return _against_session(
        NAME_READ_COLD, "request that reads a valid cookie, first time seen (cold)", samples,
        None, " (cookies built outside the timing)",
    )


def _compare(
    scale: Scale,
    name: str,
    figure: str,
    tracked: tuple[ASGIApp, dict[str, Any]],
    session: tuple[ASGIApp, dict[str, Any]],
) -> Result:
    n = scale.pick(smoke=20, quick=2_000, full=6_000)
    runner = ASGIRunner()
    try:
        for app, scope in (tracked, session):
            runner.per_request(app, scope, n // 10 + 1)
        samples = interleaved(
            {
                "session": lambda: runner.per_request(*session, n),
                "tracked": lambda: runner.per_request(*tracked, n),
            },
            scale.reps,
        )
    finally:
        runner.close()
    return _against_session(name, figure, samples, Target("<=", 1.0), "")


def _against_session(
    name: str, figure: str, samples: dict[str, list[float]], target: Target | None, note: str
) -> Result:
    ours = Stats.of(samples["tracked"]).scaled(1e6).median
    theirs = Stats.of(samples["session"]).scaled(1e6).median
    return Result(
        name=name,
        figure=figure,
        stats=paired_ratio(samples["tracked"], samples["session"]),
        unit="x",
        target=target,
        baseline="Starlette SessionMiddleware, same data",
        detail=f"{ours:.1f} µs vs {theirs:.1f} µs per request{note}",
    )
