"""The Flask shop: landing page, pricing, a lead form, and checkout → purchase.

Everything TrackLayer-specific is three lines: ``tracklayer.init_app(app)``, the
``request.tracker.convert(...)`` calls in ``lead`` and ``checkout``, and the template globals
``tracklayer_landing_script()`` / ``tracklayer_pixel()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, render_template, request
from tracklayer_flask import TrackLayer

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
}

tracklayer = TrackLayer()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """App factory; ``config`` may override ``SECRET_KEY`` and ``TRACKLAYER`` keys."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "dev-only-change-me-0123456789abcdef"
    app.config["TRACKLAYER"] = dict(TRACKLAYER)
    for key, value in (config or {}).items():
        if key == "TRACKLAYER":
            app.config["TRACKLAYER"].update(value)
        else:
            app.config[key] = value
    tracklayer.init_app(app)
    order_numbers = itertools.count(10492)

    @app.get("/")
    def landing() -> str:
        return render_template("landing.html", plans=PLANS)

    @app.get("/pricing")
    def pricing() -> str:
        return render_template("pricing.html", plans=PLANS)

    @app.route("/lead", methods=["GET", "POST"])
    def lead() -> str:
        if request.method == "GET":
            return render_template("lead.html")
        email = request.form["email"]
        lead_number = next(order_numbers)
        request.tracker.convert(  # type: ignore[attr-defined]
            "lead", conversion_id=f"lead_{lead_number}", email=email,
            external_id=f"cust_{lead_number}",
        )
        return render_template("thanks.html", what="Thanks, we will be in touch.")

    @app.route("/checkout", methods=["GET", "POST"])
    def checkout() -> str:
        plan = request.values.get("plan", "pro")
        if plan not in PLANS:
            abort(404)
        name, price = PLANS[plan]
        if request.method == "GET":
            return render_template("checkout.html", plan=plan, name=name, price=price)
        # Backend truth: the order is confirmed here (a real shop charges the card first).
        order_id = next(order_numbers)
        request.tracker.convert(  # type: ignore[attr-defined]
            "purchase",
            conversion_id=f"ord_{order_id}_purchase",
            value=price,
            currency="USD",
            email=request.form["email"],
            external_id=f"cust_{order_id}",
        )
        # Rendered by this POST so the page's Pixel call carries the same conversion_id.
        return render_template(
            "thanks.html", what=f"Order {order_id} confirmed: {name}, ${price:.2f}."
        )

    return app
