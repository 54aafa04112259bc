"""TrackLayer: server-side X (Twitter) Conversions API delivery for Python web apps.

Capture the ad click id on landing, let views record conversions with
``request.tracker.convert(...)``, and deliver them to X after the response from a durable
outbox. See README.md for the quickstart and docs/ARCHITECTURE.md for the module map.
"""

from .asgi import TrackLayerMiddleware
from .attribution import Attribution
from .consent import Consent
from .conversion import Content, Conversion
from .engine import TrackLayer
from .errors import (
    ConfigurationError,
    ConversionError,
    DeliveryError,
    OutboxError,
    TrackLayerError,
)
from .settings import EventMapping, TrackLayerSettings
from .tracker import Tracker, current_tracker
from .wsgi import TrackLayerWSGIMiddleware

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "ConfigurationError",
    "Consent",
    "Content",
    "Conversion",
    "ConversionError",
    "DeliveryError",
    "EventMapping",
    "OutboxError",
    "TrackLayer",
    "TrackLayerError",
    "TrackLayerMiddleware",
    "TrackLayerSettings",
    "TrackLayerWSGIMiddleware",
    "Tracker",
    "__version__",
    "current_tracker",
]
