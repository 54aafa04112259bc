"""The process's TrackLayer engine, built lazily from ``settings.TRACKLAYER``.

Use it for conversions made outside a request (webhooks, management commands, tasks)::

    from tracklayer_django import get_engine
    get_engine().convert("purchase", conversion_id=..., attribution=order.attribution_token)
"""

from __future__ import annotations

import threading
from typing import Any

from tracklayer_middleware.engine import TrackLayer

from .conf import conf

_SETTINGS_THAT_SHAPE_THE_ENGINE = frozenset({"TRACKLAYER", "SECRET_KEY", "SECRET_KEY_FALLBACKS"})
_lock = threading.Lock()
_engine: TrackLayer | None = None


def get_engine() -> TrackLayer:
    """The engine shared by the middleware, the template tags and your own code."""
    global _engine
    engine = _engine
    if engine is None:
        with _lock:
            if _engine is None:
                _engine = TrackLayer(conf.build())
                _wake_on_commit(_engine)
            engine = _engine
    return engine


def _wake_on_commit(engine: TrackLayer) -> None:
    """With the Django outbox, wake the sender when the caller's transaction commits (the
    engine's own wake comes while the row is still invisible to the sender's connection)."""
    from .outbox import DjangoOutbox

    if engine.sends_here and isinstance(engine.outbox, DjangoOutbox):
        engine.outbox.add_commit_listener(engine.sender.wake)


def reset_engine() -> None:
    """Close the current engine (sending what it can) so the next use rebuilds it."""
    global _engine
    with _lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.close()


def reset_engine_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: ``override_settings(TRACKLAYER=...)`` gets a fresh engine."""
    if setting in _SETTINGS_THAT_SHAPE_THE_ENGINE:
        reset_engine()
