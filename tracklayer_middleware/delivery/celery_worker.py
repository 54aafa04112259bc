"""A ready-made Celery app for shops that give TrackLayer only a broker URL.

    TRACKLAYER_CONFIG=tracklayer.toml celery -A tracklayer_middleware.delivery.celery_worker worker

Settings are read like the ``tracklayer`` command reads them (``TRACKLAYER_CONFIG`` file, then
``TRACKLAYER_*`` environment variables); the app is the one ``celery_app``/``celery_broker_url``
name, with ``tracklayer.deliver`` registered. Shops with their own Celery app call
``register_task(app, settings)`` in it instead (see docs/scale-out.md).
"""

from __future__ import annotations

from ..cli.config import load_settings
from .celery_backend import celery_app_for, register_task

settings = load_settings()
app = celery_app_for(settings)
deliver = register_task(app, settings)
