"""``Consent``: the visitor's two ad-consent signals, each granted, denied or unknown.

``ad_storage`` gates the attribution cookie; ``ad_user_data`` gates sending a conversion to X.
Unknown (``None``) counts as denied only when the site sets ``consent_required=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# JSON key (the guide's camelCase, plus Google Consent Mode's snake_case) -> field name.
_KEYS = {
    "adStorage": "ad_storage",
    "ad_storage": "ad_storage",
    "adUserData": "ad_user_data",
    "ad_user_data": "ad_user_data",
}
_JSON_NAMES = {"ad_storage": "adStorage", "ad_user_data": "adUserData"}
_WORDS = {"granted": True, "denied": False}


@dataclass(frozen=True)
class Consent:
    """Consent state; ``None`` means the site did not say (unknown)."""

    ad_storage: bool | None = None
    ad_user_data: bool | None = None

    @classmethod
    def from_json(cls, obj: object) -> Consent:
        """Parse ``{"adStorage": "granted"|"denied", "adUserData": ...}``.

        A missing key, ``null`` or a missing object (``None``) means unknown; unrelated keys
        (other Consent Mode signals) are ignored. ``True``/``False`` are accepted too.
        Raises ``ValueError`` naming the bad key when the shape is wrong.
        """
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise ValueError(
                "consent must be an object like "
                '{"adStorage": "granted", "adUserData": "denied"}, '
                f"not {type(obj).__name__}."
            )
        values: dict[str, bool | None] = {}
        for key, raw in obj.items():
            name = _KEYS.get(key) if isinstance(key, str) else None
            if name is None:
                continue
            values[name] = _parse_signal(key, raw)
        return cls(**values)

    def to_json(self) -> dict[str, str]:
        """The known signals as ``{"adStorage": "granted", ...}`` (unknown ones left out)."""
        out: dict[str, str] = {}
        for name, json_name in _JSON_NAMES.items():
            value = getattr(self, name)
            if value is not None:
                out[json_name] = "granted" if value else "denied"
        return out

    def storage_allowed(self, required: bool) -> bool:
        """May the attribution cookie be stored? Unknown counts as denied when ``required``."""
        return _allowed(self.ad_storage, required)

    def sending_allowed(self, required: bool) -> bool:
        """May a conversion be sent to X? Unknown counts as denied when ``required``."""
        return _allowed(self.ad_user_data, required)

    def merged(self, other: Consent) -> Consent:
        """This consent updated by ``other``: other's known signals win."""
        return Consent(
            ad_storage=self.ad_storage if other.ad_storage is None else other.ad_storage,
            ad_user_data=self.ad_user_data if other.ad_user_data is None else other.ad_user_data,
        )


def _parse_signal(key: str, raw: object) -> bool | None:
    if raw is None or isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _WORDS:
        return _WORDS[raw.strip().lower()]
    shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
    raise ValueError(f'consent {key!r} must be "granted" or "denied", not {shown}.')


def _allowed(signal: bool | None, required: bool) -> bool:
    if signal is None:
        return not required
    return signal
