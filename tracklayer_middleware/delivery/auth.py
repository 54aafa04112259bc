"""How a request to X proves who sends it: ``httpx.Auth`` for the three ways X accepts.

- ``BearerAuth``: ``Authorization: Bearer <token>`` (the guide's way).
- ``PixelTokenAuth``: ``X-Pixel-Token: <token>`` (X's Pixel access token, as X's own
  server-side tag sends it).
- ``OAuth1Auth``: OAuth 1.0a user context, HMAC-SHA1 (needs the ``oauth1`` extra).

Secrets are read from the environment each time a request is signed, so a rotated token is
picked up without a restart, and no auth object ever holds one: their reprs name the
environment variables only. A missing secret raises ``MissingCredentialsError`` before any
byte goes on the wire.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING

import httpx

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..settings import TrackLayerSettings


class MissingCredentialsError(ConfigurationError):
    """A secret X needs is not set in the environment (the message names the variable)."""


def _read_env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


class _TokenHeaderAuth(httpx.Auth):
    """Puts the token from ``settings.token()`` into one header."""

    header = ""

    def __init__(self, settings: TrackLayerSettings) -> None:
        self._settings = settings

    def _value(self, token: str) -> str:
        return token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the header, reading the token now."""
        token = self._settings.token()
        if token is None:
            raise MissingCredentialsError(
                f"the X token is missing: environment variable {self._settings.token_env} is "
                "unset or empty. Set it to the token from X (it is read at every send, so no "
                "restart is needed)."
            )
        if not (token.isascii() and token.isprintable()):
            # Never let httpx see it: its error would quote the header, token included.
            raise MissingCredentialsError(
                f"the X token in environment variable {self._settings.token_env} contains a "
                "line break, control or non-ASCII character: paste the token again without it."
            )
        request.headers[self.header] = self._value(token)
        yield request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self._settings.token_env!r})"


class BearerAuth(_TokenHeaderAuth):
    """``Authorization: Bearer <token>``; the token comes from the env var ``token_env``."""

    header = "Authorization"

    def _value(self, token: str) -> str:
        return f"Bearer {token}"


class PixelTokenAuth(_TokenHeaderAuth):
    """``X-Pixel-Token: <token>``; the token comes from the env var ``token_env``."""

    header = "X-Pixel-Token"


class OAuth1Auth(httpx.Auth):
    """OAuth 1.0a user context (HMAC-SHA1) from four env vars named in the settings.

    The JSON body is not part of the signature (OAuth 1.0a signs only form bodies), so the
    signature covers the method, URL and OAuth parameters, as X expects.
    """

    def __init__(self, settings: TrackLayerSettings) -> None:
        try:
            import oauthlib.oauth1  # type: ignore[import-untyped]  # noqa: F401 - fail early
        except ImportError as exc:
            raise ConfigurationError(
                "auth='oauth1' needs oauthlib: pip install 'tracklayer-middleware[oauth1]'."
            ) from exc
        self._env_names = (
            settings.oauth1_consumer_key_env,
            settings.oauth1_consumer_secret_env,
            settings.oauth1_access_token_env,
            settings.oauth1_access_token_secret_env,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign the request with HMAC-SHA1, reading the four secrets now."""
        from oauthlib.oauth1 import Client

        values = [_read_env(name) for name in self._env_names]
        missing = [
            name for name, value in zip(self._env_names, values, strict=True) if value is None
        ]
        if missing:
            raise MissingCredentialsError(
                "OAuth 1.0a credentials are missing: environment variable(s) "
                f"{', '.join(missing)} unset or empty. Set the consumer key/secret and the "
                "access token/secret of a user with AD_MANAGER or ACCOUNT_ADMIN access."
            )
        consumer_key, consumer_secret, token, token_secret = values
        signer = Client(
            consumer_key,
            client_secret=consumer_secret,
            resource_owner_key=token,
            resource_owner_secret=token_secret,
        )
        _, headers, _ = signer.sign(str(request.url), http_method=request.method)
        request.headers["Authorization"] = headers["Authorization"]
        yield request

    def __repr__(self) -> str:
        return f"OAuth1Auth(env={list(self._env_names)!r})"


def auth_for(settings: TrackLayerSettings) -> httpx.Auth:
    """The auth named by ``settings.auth``: ``bearer``, ``pixel_token`` or ``oauth1``."""
    if settings.auth == "pixel_token":
        return PixelTokenAuth(settings)
    if settings.auth == "oauth1":
        return OAuth1Auth(settings)
    return BearerAuth(settings)
