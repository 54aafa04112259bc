"""Django integration for TrackLayer.

``INSTALLED_APPS += ["tracklayer_django"]``, ``MIDDLEWARE += ["tracklayer_django.middleware.
TrackLayerMiddleware"]`` and a ``TRACKLAYER = {...}`` dict in settings; views call
``request.tracker.convert(...)``; templates ``{% load tracklayer %}`` and render
``{% tracklayer_pixel %}`` / ``{% tracklayer_landing_script %}``. Out of a request,
``get_engine().convert(...)``.
"""

from tracklayer_middleware.tracker import current_tracker

from .engine import get_engine

__all__ = ["current_tracker", "get_engine"]
