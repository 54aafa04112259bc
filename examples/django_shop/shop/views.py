"""Views of the example shop: sync ones, and an async checkout (no thread hop for TrackLayer)."""

from __future__ import annotations

import itertools

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

PLANS = {"starter": ("Starter", 29.00), "pro": ("Pro", 129.95)}
_numbers = itertools.count(10492)


def landing(request: HttpRequest) -> HttpResponse:
    """The page X ads point to (``?twclid=...`` is captured by the middleware)."""
    return render(request, "shop/landing.html")


def pricing(request: HttpRequest) -> HttpResponse:
    """Plans and their prices."""
    return render(request, "shop/pricing.html", {"plans": PLANS})


def lead(request: HttpRequest) -> HttpResponse:
    """A demo request form: the ``lead`` conversion."""
    if request.method != "POST":
        return render(request, "shop/lead.html")
    number = next(_numbers)
    request.tracker.convert(  # type: ignore[attr-defined]
        "lead", conversion_id=f"lead_{number}", email=request.POST["email"],
        external_id=f"cust_{number}",
    )
    return render(request, "shop/thanks.html", {"what": "Thanks, we will be in touch."})


async def checkout(request: HttpRequest) -> HttpResponse:
    """Checkout → purchase, as an async view."""
    plan = request.POST.get("plan") or request.GET.get("plan", "pro")
    if plan not in PLANS:
        raise Http404("no such plan")
    name, price = PLANS[plan]
    context = {"plan": plan, "name": name, "price": price}
    if request.method != "POST":
        return render(request, "shop/checkout.html", context)
    # Backend truth: the order is confirmed here (a real shop charges the card first).
    order_id = next(_numbers)
    request.tracker.convert(  # type: ignore[attr-defined]
        "purchase",
        conversion_id=f"ord_{order_id}_purchase",
        value=price,
        currency="USD",
        email=request.POST["email"],
        external_id=f"cust_{order_id}",
    )
    # Rendered by this POST so the page's Pixel call carries the same conversion_id.
    context["what"] = f"Order {order_id} confirmed: {name}, ${price:.2f}."
    return render(request, "shop/thanks.html", context)
