"""Django app config: registers TrackLayer's system checks (``manage.py check``)."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.checks import Tags, register
from django.core.signals import setting_changed


class TrackLayerConfig(AppConfig):
    """``INSTALLED_APPS += ["tracklayer_django"]``."""

    name = "tracklayer_django"
    verbose_name = "TrackLayer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks
        from .engine import reset_engine_on_setting_change

        register(Tags.security)(checks.check_settings)
        register(Tags.security)(checks.check_middleware)
        register(Tags.security, deploy=True)(checks.check_deploy)
        setting_changed.connect(reset_engine_on_setting_change, dispatch_uid="tracklayer_reset")
        from . import outbox  # noqa: F401 - registers TRACKLAYER = {"OUTBOX": "django"}
