"""Bad settings: refused at start with one ``ConfigurationError`` that says what to fix.

Never another exception type, never a silent default, never a secret echoed back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import SECRET_KEY, TOKEN, Observed, base_config
from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.settings import TrackLayerSettings

pytestmark = pytest.mark.adversarial_input


def refused(observed: Observed, config: dict[str, Any]) -> ConfigurationError:
    outcome = observed.calls(TrackLayerSettings.from_mapping, config)
    assert isinstance(outcome, ConfigurationError), f"accepted: {outcome!r}"
    return outcome


def without(config: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != key}


def test_missing_secret_key(tmp_path: Path, observed: Observed) -> None:
    error = refused(observed, without(base_config(tmp_path), "secret_key"))
    assert "secret_key" in str(error)


def test_empty_secret_key_and_bad_pixel_reported_together(
    tmp_path: Path, observed: Observed
) -> None:
    error = refused(observed, base_config(tmp_path, secret_key="", pixelId="o1a2b/../x"))
    assert len(error.problems) >= 2
    assert "secret_key" in str(error) and "pixel_id" in str(error)


@pytest.mark.parametrize("pixel", ["", "o", "o1a2b?x=1", "o1a2b\r\nX-Evil: 1", "ö1a2b", " o1a2b"])
def test_bad_pixel_id(tmp_path: Path, observed: Observed, pixel: str) -> None:
    error = refused(observed, base_config(tmp_path, pixelId=pixel))
    assert "pixel_id" in str(error)


def test_event_id_of_another_pixel(tmp_path: Path, observed: Observed) -> None:
    config = base_config(tmp_path, xEventMap={"purchase": {"eventId": "tw-zzzzz-o87ni"}})
    assert "another pixel" in str(refused(observed, config))


def test_typo_in_a_key_is_named_with_a_suggestion(tmp_path: Path, observed: Observed) -> None:
    error = refused(observed, base_config(tmp_path, secret_kee="x" * 32))
    assert "secret_kee" in str(error) and "secret_key" in str(error)


def test_token_pasted_into_token_env_is_refused_without_echoing_it(
    tmp_path: Path, observed: Observed
) -> None:
    error = refused(observed, base_config(tmp_path, token_env=f"Bearer {TOKEN}"))
    assert TOKEN not in str(error) and TOKEN not in repr(error)


def test_secret_key_never_echoed_by_a_config_error(tmp_path: Path, observed: Observed) -> None:
    error = refused(observed, base_config(tmp_path, pixelId="", batch_size=9999))
    assert SECRET_KEY not in str(error)


def test_api_base_url_not_http_is_refused(tmp_path: Path, observed: Observed) -> None:
    error = refused(observed, base_config(tmp_path, api_base_url="file:///etc/passwd"))
    assert "api_base_url" in str(error)


def test_lease_not_longer_than_timeout_is_refused(tmp_path: Path, observed: Observed) -> None:
    error = refused(observed, base_config(tmp_path, timeout_seconds=30, lease_seconds=30))
    assert "lease_seconds" in str(error)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allowedEnvironments", None),
        ("secret_key_fallbacks", 5),
        ("trusted_proxies", 1.5),
        ("batch_size", "500"),
        ("cookie_max_age", None),
        ("xEventMap", ["purchase"]),
        ("pixelId", 12345),
    ],
)
def test_wrong_value_types_are_a_configuration_error(
    tmp_path: Path, observed: Observed, key: str, value: object
) -> None:
    refused(observed, base_config(tmp_path, **{key: value}))


def test_token_env_unset_in_production_never_sends_unauthenticated(
    tmp_path: Path, observed: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings stay loadable (the token is read at use time) but say there is no token."""
    monkeypatch.delenv("TL_ADVERSARIAL_TOKEN", raising=False)
    settings = observed.calls(TrackLayerSettings.from_mapping, base_config(tmp_path))
    assert isinstance(settings, TrackLayerSettings)
    assert not settings.dry_run
    assert settings.token() is None
    monkeypatch.setenv("TL_ADVERSARIAL_TOKEN", "   ")
    assert settings.token() is None
