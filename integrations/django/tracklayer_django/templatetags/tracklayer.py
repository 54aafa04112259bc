"""``{% load tracklayer %}``, then ``{% tracklayer_pixel %}`` / ``{% tracklayer_landing_script %}``.

Both render a ``<script>`` element. The CSP nonce is the ``nonce=`` argument when given, else
``request.csp_nonce`` (django-csp), else the ``csp_nonce`` context variable (Django's own CSP
context processor); without one, no ``nonce`` attribute is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from tracklayer_middleware.conversion import Conversion
from tracklayer_middleware.pixel import render_landing_script, render_pixel_script
from tracklayer_middleware.tracker import current_tracker

from ..engine import get_engine

register = template.Library()


@register.simple_tag(takes_context=True)
def tracklayer_pixel(
    context: template.Context,
    conversions: Conversion | Iterable[Conversion] | None = None,
    nonce: str | None = None,
) -> SafeString:
    """``twq('event', ...)`` for each conversion this request made (or the ones given).

    The request is the context's ``request`` (the ``request`` context processor), else the
    one being handled (``current_tracker()``).

    Each call carries the same ``conversion_id`` the server sends, so X counts it once.
    """
    if conversions is None:
        tracker = getattr(context.get("request"), "tracker", None) or current_tracker()
        conversions = tracker.pending if tracker is not None else ()
    elif isinstance(conversions, Conversion):
        conversions = (conversions,)
    return mark_safe(render_pixel_script(tuple(conversions), nonce=_nonce(context, nonce)))


@register.simple_tag(takes_context=True)
def tracklayer_landing_script(context: template.Context, nonce: str | None = None) -> SafeString:
    """The guide's landing snippet: reports ``twclid`` and the CMP's consent to the server."""
    return mark_safe(render_landing_script(get_engine().settings, nonce=_nonce(context, nonce)))


def _nonce(context: template.Context, given: str | None) -> str | None:
    if given:
        return str(given)
    found: Any = getattr(context.get("request"), "csp_nonce", None) or context.get("csp_nonce")
    return str(found) if found else None
