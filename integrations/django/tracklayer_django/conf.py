"""TrackLayer's Django settings, read lazily from ``settings.TRACKLAYER``.

Nothing is read at import time, so ``override_settings`` works in tests (the model is
django-cors-headers' ``conf.py``). The dict takes the same keys as
``TrackLayerSettings.from_mapping()``: snake_case, UPPER_CASE or the guide's camelCase.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.settings import TrackLayerSettings, normalize_key


class Conf:
    """Shadows ``settings.TRACKLAYER`` with Django's own values as defaults."""

    @property
    def TRACKLAYER(self) -> Any:
        """The raw ``settings.TRACKLAYER`` value (``None`` when it is not set)."""
        return getattr(settings, "TRACKLAYER", None)

    def mapping(self) -> dict[str, Any]:
        """``settings.TRACKLAYER`` over Django's defaults, ready for ``from_mapping()``.

        The cookie is signed with ``SECRET_KEY`` (and verified with ``SECRET_KEY_FALLBACKS``)
        unless ``TRACKLAYER`` names its own key; a dotted path for ``consent_resolver`` is
        imported, as Django does for its own callables in settings. Raises
        ``ConfigurationError`` when ``TRACKLAYER`` is missing or not a dict.
        """
        raw = self.TRACKLAYER
        if not isinstance(raw, Mapping):
            raise ConfigurationError(
                "settings.TRACKLAYER must be a dict like {'pixelId': 'o1a2b', 'xEventMap': "
                "{'purchase': {'eventId': 'o87ni'}}}"
                + (" (it is not set)." if raw is None else f", not {type(raw).__name__}.")
            )
        # Django's keys come first so that the same key in TRACKLAYER, in any spelling, wins.
        values: dict[str, Any] = {
            "secret_key": getattr(settings, "SECRET_KEY", ""),
            "secret_key_fallbacks": tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())),
            **raw,
        }
        for key, value in list(values.items()):
            if normalize_key(str(key)) == "consent_resolver" and isinstance(value, str):
                values[key] = import_string(value)
        return values

    def build(self) -> TrackLayerSettings:
        """Validated settings; raises ``ConfigurationError`` listing every problem."""
        return TrackLayerSettings.from_mapping(self.mapping())


conf = Conf()
