"""Flask integration for TrackLayer.

.. code-block:: python

    from tracklayer_flask import TrackLayer

    tracklayer = TrackLayer()

    def create_app():
        app = Flask(__name__)
        app.config["TRACKLAYER"] = {"pixelId": "o1a2b", "xEventMap": {...}}
        tracklayer.init_app(app)
        return app

Views call ``request.tracker.convert("purchase", conversion_id=..., ...)``; templates render
``{{ tracklayer_pixel() }}`` and ``{{ tracklayer_landing_script() }}``.
"""

from tracklayer_middleware.tracker import current_tracker

from .extension import (
    TrackLayer,
    TrackLayerState,
    TrackLayerTestClient,
    get_engine,
    tracklayer_landing_script,
    tracklayer_pixel,
)

__all__ = [
    "TrackLayer",
    "TrackLayerState",
    "TrackLayerTestClient",
    "current_tracker",
    "get_engine",
    "tracklayer_landing_script",
    "tracklayer_pixel",
]
