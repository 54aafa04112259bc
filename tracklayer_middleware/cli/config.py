"""Where the standalone CLI finds its settings: a file, ``TRACKLAYER_CONFIG``, or env vars.

Order: ``--config FILE``, else the file named by ``TRACKLAYER_CONFIG``, else nothing; then
``TRACKLAYER_<FIELD>`` environment variables override the file (twelve-factor style, so a
file can leave ``secret_key`` out and a host can set ``TRACKLAYER_SECRET_KEY``).

Files are TOML (``.toml``; settings at the top level or under a ``[tracklayer]`` table) or
JSON. JSON may be a flat settings object or the guide's two objects side by side:
``{"xAdsDestination": {...}, "xEventMap": {...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..settings import TrackLayerSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "TRACKLAYER_"
CONFIG_ENV = "TRACKLAYER_CONFIG"
# TRACKLAYER_* names that are not settings fields.
_NOT_FIELDS = frozenset({CONFIG_ENV})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrackLayerSettings:
    """Settings as the ``tracklayer`` command reads them; ``ConfigurationError`` on a problem."""
    env = os.environ if environ is None else environ
    file_name = path if path is not None else env.get(CONFIG_ENV) or None
    values: dict[str, Any] = dict(read_config_file(file_name)) if file_name else {}
    values.update(settings_from_env(env))
    if not values:
        raise ConfigurationError(
            "no settings found: pass --config tracklayer.toml (or the guide's JSON), set "
            f"{CONFIG_ENV} to such a file, or set {ENV_PREFIX}PIXEL_ID, "
            f"{ENV_PREFIX}SECRET_KEY, {ENV_PREFIX}EVENTS, ... (see docs/cli.md). "
            "`tracklayer demo` needs none."
        )
    return TrackLayerSettings.from_mapping(values)


def read_config_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The settings mapping stored in a TOML or JSON file."""
    file = Path(path)
    where = f"config file {str(file)!r}"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {str(file)!r}: {exc.strerror}.") from exc
    if file.suffix.lower() == ".json":
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{where} is not valid JSON: {exc}.") from exc
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{where} is not valid TOML: {exc}.") from exc
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where} must hold an object of settings.")
    return unwrap_config(data)


def unwrap_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten ``[tracklayer]`` tables and the guide's ``xAdsDestination`` + ``xEventMap``."""
    if isinstance(data.get("tracklayer"), Mapping):
        return dict(data["tracklayer"])
    destination = data.get("xAdsDestination")
    if isinstance(destination, Mapping):
        merged = {k: v for k, v in data.items() if k != "xAdsDestination"}
        merged.update(destination)
        return merged
    return dict(data)


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``TRACKLAYER_<FIELD>`` variables as typed setting values.

    Unknown ``TRACKLAYER_*`` names are passed through so that ``from_mapping`` reports them
    with a suggestion (a typo in an env var must not be silent either).
    """
    defaults = {f.name: f for f in dataclasses.fields(TrackLayerSettings)}
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_FIELDS:
            continue
        key = name[len(ENV_PREFIX):].lower()
        spec = defaults.get(key)
        values[key] = raw if spec is None else _coerce(key, raw, spec)
    return values


def _coerce(key: str, raw: str, spec: dataclasses.Field[Any]) -> Any:
    if key == "events":
        return _parse_events(raw)
    default = spec.default
    if isinstance(default, bool) or key == "cookie_secure":
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return None if key == "cookie_secure" and word == "" else False
        raise ConfigurationError(f"{ENV_PREFIX}{key.upper()}={raw!r} must be true or false.")
    if isinstance(default, (int, float)):
        try:
            return type(default)(raw)
        except ValueError:
            raise ConfigurationError(
                f"{ENV_PREFIX}{key.upper()}={raw!r} must be a number."
            ) from None
    return raw


def _parse_events(raw: str) -> Any:
    """JSON (the guide's xEventMap shape) or ``purchase=o87ni,lead=o87nf``."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{ENV_PREFIX}EVENTS is not valid JSON: {exc}.") from exc
    events: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, event_id = item.partition("=")
        if not sep:
            raise ConfigurationError(
                f"{ENV_PREFIX}EVENTS item {item!r} must look like 'purchase=o87ni'."
            )
        events[name.strip()] = event_id.strip()
    return events
