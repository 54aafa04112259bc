"""The apps under test: one small Starlette app and one small Flask app, bare or wrapped.

Baselines and TrackLayer runs use the very same app object, so a ratio measures only what
the middleware adds. The factories at the bottom are what uvicorn (``--factory``) and
gunicorn (``"module:factory()"``) load in the server benchmarks; they read their wiring from
``TRACKLAYER_BENCH_*`` environment variables set by the benchmark that starts them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.conversion import build_conversion
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

PIXEL_ID = "o1a2b"
SECRET_KEY = "benchmark-secret-key-0123456789abcdef"
X_TOKEN = "bench-token-not-a-secret"
TWCLID = "29q0w6g2k2m4a"
LANDING_PATH = f"/pricing?twclid={TWCLID}&utm_source=x&utm_campaign=spring"
PAGE = "<html><body><h1>Pricing</h1><p>Plans from $9.</p></body></html>"
#: Cookies a typical site already carries, sent on every benchmark request.
OTHER_COOKIES = "_ga=GA1.2.1234567890.1700000000; csrftoken=9f8e7d6c5b4a39281706f5e4d3c2b1a0"
#: Browser-like request headers (the cookie header is added per case).
HEADERS = (
    ("host", "shop.example"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
)


def settings(**overrides: Any) -> dict[str, Any]:
    """Engine settings for benchmarks: memory outbox, nothing sent unless overridden."""
    return {
        "pixel_id": PIXEL_ID,
        "secret_key": SECRET_KEY,
        "events": {"purchase": {"eventId": "o87ni", "label": "Purchase"}},
        "outbox": "memory",
        "delivery": "worker",
        **overrides,
    }


def engine(**overrides: Any) -> TrackLayer:
    """A ``TrackLayer`` over ``settings(**overrides)``."""
    return TrackLayer(settings(**overrides))


# ---------------------------------------------------------------------- Starlette
async def page(request: Request) -> Response:
    """A page that makes no conversion: the common case."""
    return PlainTextResponse(PAGE, media_type="text/html")


async def session_landing(request: Request) -> Response:
    """The baseline's own landing capture: store the click in Starlette's session."""
    twclid = request.query_params.get("twclid")
    if twclid:
        request.session["attribution"] = click_data(twclid, str(request.url))
    return PlainTextResponse(PAGE, media_type="text/html")


async def session_read(request: Request) -> Response:
    """The baseline's read of a stored click."""
    request.session.get("attribution")
    return PlainTextResponse(PAGE, media_type="text/html")


def click_data(twclid: str, landing_url: str) -> dict[str, Any]:
    """What TrackLayer's cookie holds, as the session baseline stores it."""
    return {
        "twclid": twclid,
        "landing_url": landing_url,
        "captured_at": int(time.time()),
        "consent": {"adStorage": "granted", "adUserData": "granted"},
        "attribution_id": secrets.token_urlsafe(16),
    }


def starlette_app() -> Starlette:
    """A small Starlette site (routing, error middleware: what a real app pays anyway)."""
    return Starlette(
        routes=[
            Route("/", page),
            Route("/pricing", page),
            Route("/session/pricing", session_landing),
            Route("/session/read", session_read),
        ]
    )


def session_app() -> SessionMiddleware:
    """The Starlette app behind ``SessionMiddleware`` (the cookie baseline)."""
    return SessionMiddleware(starlette_app(), secret_key=SECRET_KEY, https_only=False)


# ---------------------------------------------------------------------- Flask
def flask_app() -> Any:
    """A small Flask site with the same page."""
    from flask import Flask

    app = Flask("tracklayer_bench")

    @app.get("/")
    def index() -> str:
        return PAGE

    return app


# ---------------------------------------------------------------------- servers
_ids = itertools.count()
_INLINE_SETTINGS = TrackLayerSettings.from_mapping(settings())


def _server_engine() -> TrackLayer:
    return TrackLayer(
        settings(
            outbox=os.environ["TRACKLAYER_BENCH_OUTBOX"],
            delivery=os.environ.get("TRACKLAYER_BENCH_DELIVERY", "background"),
            environment="production",
            api_base_url=os.environ.get("TRACKLAYER_BENCH_X", "http://127.0.0.1:9"),
            timeout_seconds=10.0,
        )
    )


def buy_conversion(request: Request) -> dict[str, Any]:
    """The purchase a checkout view converts (a unique id per request)."""
    return {
        "conversion_id": f"ord_{os.getpid()}_{next(_ids)}",
        "value": 129.95,
        "currency": "USD",
        "email": "Jane.Doe@Example.com",
        "phone": "+1 (415) 555-0100",
    }


async def buy(request: Request) -> Response:
    """Checkout confirmed: convert through the request's tracker."""
    request.state.tracker.convert("purchase", **buy_conversion(request))
    return PlainTextResponse("thanks")


def buy_inline(request: Request) -> Response:
    """The naive alternative: POST to X inside the view (sync view, Starlette threadpool)."""
    conversion = build_conversion(_INLINE_SETTINGS, "purchase", **buy_conversion(request))
    httpx.post(
        f"{os.environ['TRACKLAYER_BENCH_X']}/12/measurement/conversions/{PIXEL_ID}",
        json={"conversions": [conversion.to_x()]},
        headers={"Authorization": f"Bearer {X_TOKEN}"},
        timeout=10.0,
    )
    return PlainTextResponse("thanks")


def asgi_server_app() -> Any:
    """uvicorn factory: the Starlette app as ``TRACKLAYER_BENCH_WRAP`` says (``bare`` or
    ``bare_again``, ``floor``: the do-nothing middleware, else behind TrackLayer)."""
    from .floors import NullASGIMiddleware

    app = Starlette(
        routes=[Route("/", page), Route("/buy", buy), Route("/buy-inline", buy_inline)]
    )
    return _wrapped(app, NullASGIMiddleware, TrackLayerMiddleware)


def wsgi_server_app() -> Any:
    """gunicorn factory: the Flask app, wrapped as for ``asgi_server_app``."""
    from .floors import NullWSGIMiddleware

    return _wrapped(flask_app(), NullWSGIMiddleware, TrackLayerWSGIMiddleware)


def _wrapped(app: Any, floor: Any, tracklayer: Any) -> Any:
    wrap = os.environ.get("TRACKLAYER_BENCH_WRAP", "tracklayer")
    if wrap in ("bare", "bare_again"):
        return app
    if wrap == "floor":
        return floor(app)
    return tracklayer(app, _server_engine())
