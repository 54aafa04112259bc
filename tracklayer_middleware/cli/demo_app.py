"""The demo shop behind ``tracklayer demo``: a tiny Starlette app wearing ``TrackLayerMiddleware``.

Four pages tell the guide's story — a pricing page an X ad lands on, a demo-request form
(``lead``), a checkout (``purchase`` plus its browser Pixel twin) — and ``/status`` shows the
outbox. Every conversion is made by a view from backend truth via ``request.state.tracker``.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from ..asgi import TrackLayerMiddleware
from ..pixel import render_landing_script, render_pixel_script
from .status import collect_status, render_status

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from ..engine import TrackLayer

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} · TrackLayer demo shop</title>
<style>body{{font:16px system-ui;max-width:46rem;margin:2rem auto}}
pre{{background:#f4f4f4;padding:1rem;overflow:auto}}</style></head>
<body><nav><a href="/">shop</a> · <a href="/pricing">pricing</a> ·
<a href="/status">delivery status</a></nav><h1>{title}</h1>{body}{scripts}</body></html>"""


def _page(title: str, body: str, scripts: str = "") -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body, scripts=scripts))


async def _form(request: Request) -> dict[str, str]:
    # A urlencoded form read by hand: Starlette's form() would need python-multipart.
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body[:8192]))


def build_demo_app(engine: TrackLayer) -> ASGIApp:
    """The shop with TrackLayer installed in front of it."""

    async def home(request: Request) -> HTMLResponse:
        return _page("TrackLayer demo shop", (
            "<p>Land here from an X ad: "
            '<a href="/pricing?twclid=29q0w6g2k2m4a&amp;utm_source=x&amp;utm_campaign=spring">'
            "/pricing?twclid=…</a></p>"
        ))

    async def pricing(request: Request) -> HTMLResponse:
        tracker = request.state.tracker
        clicked = "yes" if tracker.attribution else "no"
        return _page("Pricing", (
            f"<p>Pro plan: 129.95 USD. Click context stored: {clicked}.</p>"
            '<form method="post" action="/demo-request"><input name="email" '
            'placeholder="email"><input type="hidden" name="lead_id" value="web1">'
            "<button>Request a demo</button></form>"
            '<form method="post" action="/checkout"><input name="email" placeholder="email">'
            '<input type="hidden" name="order_id" value="10492">'
            "<button>Buy for 129.95 USD</button></form>"
        ), render_landing_script(engine.settings))

    async def demo_request(request: Request) -> HTMLResponse:
        form = await _form(request)
        conversion = request.state.tracker.convert(
            "lead",
            conversion_id=f"lead_{form.get('lead_id', 'web1')}",
            email=form.get("email") or None,
        )
        recorded = html.escape(conversion.conversion_id)
        return _page("Thanks, we will be in touch",
                     f"<p>lead recorded as <code>{recorded}</code></p>")

    async def checkout(request: Request) -> HTMLResponse:
        form = await _form(request)
        order_id = form.get("order_id", "10492")
        # Backend truth: the order is confirmed here, so the purchase is converted here.
        conversion = request.state.tracker.convert(
            "purchase",
            conversion_id=f"ord_{order_id}_purchase",
            value=129.95,
            currency="USD",
            email=form.get("email") or None,
            external_id=f"cust_{order_id}",
            description="TrackLayer purchase",
        )
        return _page("Order confirmed",
                     f"<p>order {html.escape(order_id)} paid: 129.95 USD</p>",
                     render_pixel_script([conversion]))

    async def status(request: Request) -> HTMLResponse:
        text = render_status(collect_status(engine.outbox, engine.settings))
        return _page("Delivery status", f"<pre>{html.escape(text)}</pre>"
                     '<script>setTimeout(function(){location.reload()}, 2000)</script>')

    shop = Starlette(routes=[
        Route("/", home),
        Route("/pricing", pricing),
        Route("/demo-request", demo_request, methods=["POST"]),
        Route("/checkout", checkout, methods=["POST"]),
        Route("/status", status),
    ])
    return TrackLayerMiddleware(shop, engine)
