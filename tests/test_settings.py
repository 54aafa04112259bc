"""TrackLayerSettings: defaults, the guide's camelCase config, all problems reported at once."""

from __future__ import annotations

import pytest

from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.settings import EventMapping, TrackLayerSettings, normalize_key

GUIDE_DESTINATION = {
    "enabled": True,
    "pixelId": "o1a2b",
    "apiVersion": "12",
    "endpoint": "https://ads-api.x.com/12/measurement/conversions/o1a2b",
    "tokenSecretName": "X_ADS_BEARER_TOKEN",
    "allowedEnvironments": ["production"],
}
GUIDE_EVENT_MAP = {
    "page_view": {"eventId": "o87ne", "label": "PageView"},
    "lead": {"eventId": "o87nf", "label": "Lead"},
    "sign_up": {"eventId": "o87ng", "label": "SignUp"},
    "begin_checkout": {"eventId": "o87nh", "label": "StartCheckout"},
    "purchase": {"eventId": "o87ni", "label": "Purchase"},
}


def make(**overrides: object) -> TrackLayerSettings:
    base: dict[str, object] = {
        **GUIDE_DESTINATION,
        "xEventMap": GUIDE_EVENT_MAP,
        "secret_key": "s" * 32,
    }
    base.update(overrides)
    return TrackLayerSettings.from_mapping(base)


def test_guide_config_is_accepted_as_is() -> None:
    settings = make()
    assert settings.pixel_id == "o1a2b"
    assert settings.token_env == "X_ADS_BEARER_TOKEN"
    assert settings.allowed_environments == ("production",)
    assert settings.events["purchase"] == EventMapping("purchase", "o87ni", "Purchase")
    assert settings.endpoint_url == "https://ads-api.x.com/12/measurement/conversions/o1a2b"


def test_defaults_match_the_design() -> None:
    settings = TrackLayerSettings(pixel_id="o1a2b", secret_key="k" * 32)
    assert settings.api_version == "12"
    assert settings.api_base_url == "https://ads-api.x.com"
    assert settings.token_env == "X_ADS_BEARER_TOKEN"
    assert settings.allowed_environments == ("production",)
    assert (settings.timeout_seconds, settings.lease_seconds) == (30.0, 120.0)
    assert (settings.retry_base_seconds, settings.retry_max_seconds) == (1.0, 300.0)
    assert (settings.max_attempts, settings.dead_after_hours) == (12, 72.0)
    assert (settings.batch_size, settings.rate_limit_per_15min) == (500, 48_000)
    assert settings.shutdown_timeout == 5.0
    assert settings.cookie_name == "tl_attr"
    assert settings.cookie_max_age == 90 * 24 * 3600


def test_environment_outside_allowed_means_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make(environment="staging").dry_run
    assert not make(environment="production").dry_run
    monkeypatch.setenv("TRACKLAYER_ENVIRONMENT", "production")
    assert not make().dry_run
    monkeypatch.delenv("TRACKLAYER_ENVIRONMENT")
    assert make().dry_run, "with no environment configured, nothing is sent for real"


def test_token_is_read_from_the_environment_at_use_time(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make()
    monkeypatch.delenv("X_ADS_BEARER_TOKEN", raising=False)
    assert settings.token() is None
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", "tok-SECRET-123")
    assert settings.token() == "tok-SECRET-123"
    assert "tok-SECRET-123" not in repr(settings)


def test_repr_hides_signing_keys() -> None:
    settings = make(
        secret_key="super-secret-signing-key", secret_key_fallbacks=["old-secret-key-xx"]
    )
    assert "super-secret-signing-key" not in repr(settings)
    assert "old-secret-key-xx" not in repr(settings)
    assert settings.signing_keys == ("super-secret-signing-key", "old-secret-key-xx")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("pixelId", "pixel_id"),
        ("PIXEL_ID", "pixel_id"),
        ("pixel_id", "pixel_id"),
        ("tokenSecretName", "token_env"),
        ("xEventMap", "events"),
        ("OUTBOX", "outbox"),
        ("allowedEnvironments", "allowed_environments"),
    ],
)
def test_key_spellings(key: str, expected: str) -> None:
    assert normalize_key(key) == expected


def test_unknown_key_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError) as info:
        make(timeout_secnds=3)
    assert "timeout_secnds" in str(info.value)
    assert "timeout_seconds" in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        TrackLayerSettings.from_mapping(
            {"pixelId": "", "secret_key": "", "xEventMap": {"purchase": {"eventId": ""}},
             "batch_size": 900, "colour": "blue"}
        )
    problems = info.value.problems
    text = str(info.value)
    assert len(problems) >= 5, problems
    for needle in ("pixel_id", "secret_key", "purchase", "batch_size", "colour"):
        assert needle in text


def test_endpoint_must_agree_with_pixel_and_version() -> None:
    with pytest.raises(ConfigurationError, match="does not agree"):
        make(endpoint="https://ads-api.x.com/11/measurement/conversions/o1a2b")


def test_lease_must_exceed_timeout() -> None:
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        make(timeout_seconds=30, lease_seconds=10)


def test_event_map_accepts_plain_ids_and_tw_form() -> None:
    settings = make(xEventMap={"lead": "o87nf", "purchase": "tw-o1a2b-o87ni"})
    assert settings.events["lead"].pixel_event_id("o1a2b") == "tw-o1a2b-o87nf"
    assert settings.events["purchase"].pixel_event_id("o1a2b") == "tw-o1a2b-o87ni"


def test_event_id_of_another_pixel_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="another pixel"):
        make(xEventMap={"purchase": "tw-zzzz9-o87ni"})


def test_token_env_must_name_a_variable_not_hold_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="token_env"):
        make(tokenSecretName="Bearer AAAA:real/token==")


def test_comma_separated_environments_from_env_style_config() -> None:
    assert make(allowedEnvironments="production, staging").allowed_environments == (
        "production",
        "staging",
    )


@pytest.mark.parametrize("field", ["pixel_id", "token_env"])
def test_trailing_newline_is_not_smuggled_past_validation(field: str) -> None:
    value = "o1a2b\n" if field == "pixel_id" else "X_ADS_BEARER_TOKEN\n"
    with pytest.raises(ConfigurationError, match=field):
        make(**{field: value})


def test_default_currency_must_be_a_real_iso_code() -> None:
    with pytest.raises(ConfigurationError, match="default_currency"):
        make(default_currency="XYZ")
