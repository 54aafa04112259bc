"""The FastAPI shop: landing page, pricing, a lead form, and checkout → purchase.

TrackLayer-specific lines: the engine, ``Middleware(TrackLayerMiddleware, engine=...)``, the
``lifespan`` that flushes on shutdown, ``tracker: Tracker = Depends(get_tracker)`` in the
views that convert, and two template globals.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.middleware import Middleware

from tracklayer_middleware import Tracker, TrackLayer, TrackLayerMiddleware
from tracklayer_middleware.fastapi import get_tracker, lifespan
from tracklayer_middleware.pixel import render_landing_script, render_pixel_script

# FastAPI's Annotated style: `tracker: CurrentTracker` is `tracker: Tracker = Depends(get_tracker)`.
CurrentTracker = Annotated[Tracker, Depends(get_tracker)]
PLANS = {"starter": ("Starter", 29.00), "pro": ("Pro", 129.95)}
TRACKLAYER = {
    # The guide's destination config and event map, as-is.
    "pixelId": "o1a2b",
    "apiVersion": "12",
    "tokenSecretName": "X_ADS_BEARER_TOKEN",
    "allowedEnvironments": ["production"],
    "xEventMap": {
        "lead": {"eventId": "o87nf", "label": "Lead"},
        "begin_checkout": {"eventId": "o87nh", "label": "StartCheckout"},
        "purchase": {"eventId": "o87ni", "label": "Purchase"},
    },
    "secretKey": "dev-only-change-me-0123456789abcdef",
}


def create_app(settings: Mapping[str, Any] | None = None) -> FastAPI:
    """Build the shop; ``settings`` override keys of ``TRACKLAYER``."""
    tracklayer = TrackLayer({**TRACKLAYER, **(settings or {})})
    app = FastAPI(
        middleware=[Middleware(TrackLayerMiddleware, engine=tracklayer)],
        lifespan=lifespan(tracklayer),
    )
    app.state.tracklayer = tracklayer
    templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
    templates.env.globals["tracklayer_landing_script"] = lambda: Markup(
        render_landing_script(tracklayer.settings)
    )
    templates.env.globals["tracklayer_pixel"] = lambda request: Markup(
        render_pixel_script(get_tracker(request).pending)
    )
    numbers = itertools.count(10492)

    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {"plans": PLANS, **context})

    @app.get("/", response_class=HTMLResponse)
    async def landing(request: Request) -> HTMLResponse:
        return page(request, "landing.html")

    @app.get("/pricing", response_class=HTMLResponse)
    async def pricing(request: Request) -> HTMLResponse:
        return page(request, "pricing.html")

    @app.get("/lead", response_class=HTMLResponse)
    async def lead_form(request: Request) -> HTMLResponse:
        return page(request, "lead.html")

    @app.post("/lead", response_class=HTMLResponse)
    def lead(
        request: Request, email: Annotated[str, Form()], tracker: CurrentTracker
    ) -> HTMLResponse:
        number = next(numbers)
        tracker.convert("lead", conversion_id=f"lead_{number}", email=email,
                        external_id=f"cust_{number}")
        return page(request, "thanks.html", what="Thanks, we will be in touch.")

    @app.get("/checkout", response_class=HTMLResponse)
    async def checkout_form(request: Request, plan: str = "pro") -> HTMLResponse:
        name, price = _plan(plan)
        return page(request, "checkout.html", plan=plan, name=name, price=price)

    @app.post("/checkout", response_class=HTMLResponse)
    async def checkout(
        request: Request,
        email: Annotated[str, Form()],
        tracker: CurrentTracker,
        plan: Annotated[str, Form()] = "pro",
    ) -> HTMLResponse:
        name, price = _plan(plan)
        # Backend truth: the order is confirmed here (a real shop charges the card first).
        order_id = next(numbers)
        tracker.convert("purchase", conversion_id=f"ord_{order_id}_purchase", value=price,
                        currency="USD", email=email, external_id=f"cust_{order_id}")
        # Rendered by this POST so the page's Pixel call carries the same conversion_id.
        return page(request, "thanks.html", what=f"Order {order_id} confirmed: {name}.")

    return app


def _plan(key: str) -> tuple[str, float]:
    if key not in PLANS:
        raise HTTPException(404, "no such plan")
    return PLANS[key]
