"""The three ways to authenticate to X, checked by the fake X over real HTTP."""

from __future__ import annotations

import sys

import httpx
import pytest

from tracklayer_middleware.delivery.auth import (
    BearerAuth,
    MissingCredentialsError,
    OAuth1Auth,
    PixelTokenAuth,
    auth_for,
)
from tracklayer_middleware.delivery.client import XConversionsClient
from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing import FakeXConversionsAPI

OAUTH_ENV = {
    "X_CONSUMER_KEY": "ck-public",
    "X_CONSUMER_SECRET": "cs-SECRET-1",
    "X_ACCESS_TOKEN": "at-public",
    "X_ACCESS_TOKEN_SECRET": "ats-SECRET-2",
}
OAUTH_CREDS = tuple(OAUTH_ENV.values())


def make_settings(**overrides: object) -> TrackLayerSettings:
    values: dict[str, object] = {"pixel_id": "o1a2b", "secret_key": "k" * 32}
    values.update(overrides)
    return TrackLayerSettings(**values)  # type: ignore[arg-type]


def test_auth_for_picks_by_setting():
    assert isinstance(auth_for(make_settings()), BearerAuth)
    assert isinstance(auth_for(make_settings(auth="pixel_token")), PixelTokenAuth)
    assert isinstance(auth_for(make_settings(auth="oauth1")), OAuth1Auth)


def test_pixel_token_goes_in_x_pixel_token_header(x_conversion, monkeypatch):
    monkeypatch.setenv("MY_PIXEL_TOKEN", "px-SECRET")
    with FakeXConversionsAPI(token="px-SECRET", auth="pixel_token") as fake:
        settings = make_settings(
            auth="pixel_token", token_env="MY_PIXEL_TOKEN", api_base_url=fake.base_url
        )
        with XConversionsClient(settings) as client:
            assert client.send([x_conversion()]).ok
    (request,) = fake.requests
    assert request.headers["x-pixel-token"] == "px-SECRET"
    assert "authorization" not in request.headers
    assert request.auth_scheme == "pixel_token"
    assert request.redacted_headers()["x-pixel-token"] == "***"


def test_bearer_token_rejected_by_a_pixel_token_endpoint(x_conversion, monkeypatch):
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", "px-SECRET")
    fake = FakeXConversionsAPI(token="px-SECRET", auth="pixel_token").start()
    with fake, XConversionsClient(make_settings(api_base_url=fake.base_url)) as client:
        assert client.send([x_conversion()]).kind == "auth"


def test_oauth1_signature_is_verified_by_the_fake(x_conversion, monkeypatch):
    for name, value in OAUTH_ENV.items():
        monkeypatch.setenv(name, value)
    fake = FakeXConversionsAPI(auth="oauth1", oauth1=OAUTH_CREDS).start()  # type: ignore[arg-type]
    settings = make_settings(auth="oauth1", api_base_url=fake.base_url)
    with fake, XConversionsClient(settings) as client:
        assert client.send([x_conversion()]).ok
        monkeypatch.setenv("X_CONSUMER_SECRET", "wrong")  # signs, but with the wrong key
        assert client.send([x_conversion()]).kind == "auth"
    header = fake.requests[0].headers["authorization"]
    assert header.startswith("OAuth ") and 'oauth_signature_method="HMAC-SHA1"' in header
    assert "SECRET" not in header


def test_oauth1_missing_env_names_the_variables_and_makes_no_request(x_conversion, monkeypatch):
    for name, value in OAUTH_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("X_ACCESS_TOKEN_SECRET")
    fake = FakeXConversionsAPI(auth="oauth1", oauth1=OAUTH_CREDS).start()  # type: ignore[arg-type]
    settings = make_settings(auth="oauth1", api_base_url=fake.base_url)
    with fake, XConversionsClient(settings) as client:
        result = client.send([x_conversion()])
    assert result.kind == "auth"
    assert result.detail is not None and "X_ACCESS_TOKEN_SECRET" in result.detail
    assert fake.requests == []


def test_oauth1_without_oauthlib_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "oauthlib.oauth1", None)
    with pytest.raises(ConfigurationError, match=r"tracklayer-middleware\[oauth1\]"):
        OAuth1Auth(make_settings(auth="oauth1"))


def test_missing_token_raises_before_the_request_leaves(monkeypatch):
    monkeypatch.delenv("X_ADS_BEARER_TOKEN", raising=False)
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    http = httpx.Client(auth=BearerAuth(make_settings()), transport=transport)
    with http, pytest.raises(MissingCredentialsError, match="X_ADS_BEARER_TOKEN"):
        http.post("http://127.0.0.1/")
    assert sent == []


def test_reprs_name_env_vars_never_secrets(monkeypatch):
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", "bearer-SECRET")
    for name, value in OAUTH_ENV.items():
        monkeypatch.setenv(name, value)
    texts = [
        repr(auth_for(make_settings(auth=mode))) for mode in ("bearer", "pixel_token", "oauth1")
    ]
    assert texts[0] == "BearerAuth(env='X_ADS_BEARER_TOKEN')"
    assert "X_CONSUMER_SECRET" in texts[2]
    assert not any("SECRET-" in text or "bearer-SECRET" in text for text in texts)
