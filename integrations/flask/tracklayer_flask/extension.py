"""The Flask extension: ``TrackLayer(app)`` or ``TrackLayer()`` + ``init_app(app)``.

Per app it validates the settings from ``app.config`` at once, keeps a ``TrackLayerState`` in
``app.extensions["tracklayer"]`` that builds the engine on first use, wraps ``app.wsgi_app``
with the core WSGI middleware (landing capture, the attribution endpoint, and the hand-off of
conversions when the server closes the response), puts the
request's tracker on ``request.tracker``, adds the Jinja globals ``tracklayer_pixel()`` and
``tracklayer_landing_script()``, and the ``flask tracklayer`` command group.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_request_context, request
from flask.testing import FlaskClient
from markupsafe import Markup

from tracklayer_middleware.conversion import Conversion
from tracklayer_middleware.engine import TrackLayer as Engine
from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.pixel import render_landing_script, render_pixel_script
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.tracker import Tracker
from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

from .cli import tracklayer_command

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from werkzeug.test import TestResponse

EXTENSION_KEY = "tracklayer"
TRACKER_ENVIRON_KEY = "tracklayer.tracker"


class TrackLayer:
    """TrackLayer for one or more Flask apps (state lives on each app, never on this object).

    Settings come from ``app.config["TRACKLAYER"]`` (a dict with the keys of
    ``TrackLayerSettings.from_mapping``, the guide's camelCase included) and from
    ``TRACKLAYER_<NAME>`` config keys, which win; keyword ``overrides`` win over both. The
    attribution cookie is signed with ``SECRET_KEY`` unless a ``secret_key`` is configured.
    """

    def __init__(self, app: Flask | None = None, **overrides: Any) -> None:
        self._overrides = overrides
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **overrides: Any) -> None:
        """Install TrackLayer on ``app``; raises ``RuntimeError`` if it already has it.

        Settings are validated now (``ConfigurationError``); the engine is built on first use,
        so ``flask`` commands and a pre-forking server's master never start a sender.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"TrackLayer is already installed on the Flask app {app.name!r}. Call "
                "TrackLayer(app) or init_app(app) once per app, and use "
                "tracklayer_flask.get_engine() (or TrackLayer.engine) elsewhere."
            )
        state = TrackLayerState(settings_from_config(app, **{**self._overrides, **overrides}),
                                app.wsgi_app)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = state  # type: ignore[method-assign]
        app.before_request(_attach_tracker)
        app.add_template_global(tracklayer_pixel)
        app.add_template_global(tracklayer_landing_script)
        app.cli.add_command(tracklayer_command)
        if app.test_client_class is None:
            app.test_client_class = TrackLayerTestClient

    @property
    def engine(self) -> Engine:
        """The current app's engine: ``convert()`` out of requests, ``flush()``, ``stats()``."""
        return get_engine()


class TrackLayerTestClient(FlaskClient):
    """``app.test_client()`` with TrackLayer installed (unless the app chose its own class).

    Reads and closes each response at once, as a server does once it sent it, so the request's
    conversions are handed off before the call returns. ``buffered=False`` keeps werkzeug's
    lazy response (then the hand-off waits for ``response.close()``).
    """

    def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> TestResponse:
        """Like ``FlaskClient.open``, buffered by default."""
        return super().open(*args, buffered=buffered, **kwargs)


class TrackLayerState:
    """What ``init_app`` keeps in ``app.extensions["tracklayer"]``; also the app's WSGI entry.

    The engine and the core WSGI middleware (landing capture, the attribution endpoint, the
    hand-off when the server closes the response) are built on the first request or
    ``get_engine()`` call, in the process that serves.
    """

    def __init__(self, settings: TrackLayerSettings, wsgi_app: WSGIApplication) -> None:
        self.settings = settings
        self._wsgi_app = wsgi_app
        self._middleware: TrackLayerWSGIMiddleware | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The app's engine (built now if it was not yet)."""
        return self.middleware.engine

    @property
    def middleware(self) -> TrackLayerWSGIMiddleware:
        """The core WSGI middleware around the app's original ``wsgi_app``."""
        middleware = self._middleware
        if middleware is None:
            with self._lock:
                if self._middleware is None:
                    self._middleware = TrackLayerWSGIMiddleware(
                        self._wsgi_app, Engine(self.settings)
                    )
                middleware = self._middleware
        return middleware

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.middleware(environ, start_response)

    def __repr__(self) -> str:
        built = "built" if self._middleware is not None else "not built yet"
        return f"<TrackLayerState pixel={self.settings.pixel_id} engine {built}>"


def settings_from_config(app: Flask, **overrides: Any) -> TrackLayerSettings:
    """``TrackLayerSettings`` from ``app.config`` (``ConfigurationError`` lists every problem)."""
    values: dict[str, Any] = {}
    if app.config.get("SECRET_KEY"):
        values["secret_key"] = app.config["SECRET_KEY"]
    mapping = app.config.get("TRACKLAYER") or {}
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(
            f"app.config['TRACKLAYER'] must be a dict, not {type(mapping).__name__}."
        )
    values.update(mapping)
    values.update(app.config.get_namespace("TRACKLAYER_"))
    return TrackLayerSettings.from_mapping(values, **overrides)


def get_engine(app: Flask | None = None) -> Engine:
    """The engine of ``app`` (default: ``current_app``)."""
    app = app or current_app
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, TrackLayerState):
        raise RuntimeError(
            f"TrackLayer is not installed on the Flask app {app.name!r}: call "
            "TrackLayer(app) or TrackLayer().init_app(app) in your app factory."
        )
    return state.engine


def tracklayer_pixel(
    conversions: Conversion | Iterable[Conversion] | None = None, nonce: str | None = None
) -> Markup:
    """Jinja global: ``twq('event', ...)`` for this request's conversions (or the ones given).

    Each call carries the ``conversion_id`` the server sends, so X counts the purchase once.
    The CSP nonce defaults to ``request.csp_nonce`` (set by Flask-Talisman) when present.
    """
    if conversions is None:
        tracker = _request_tracker()
        conversions = tracker.pending if tracker is not None else ()
    elif isinstance(conversions, Conversion):
        conversions = (conversions,)
    return Markup(render_pixel_script(tuple(conversions), nonce=_nonce(nonce)))


def tracklayer_landing_script(nonce: str | None = None) -> Markup:
    """Jinja global: the guide's landing snippet, reporting ``twclid`` and consent."""
    state: TrackLayerState = current_app.extensions[EXTENSION_KEY]
    return Markup(render_landing_script(state.settings, nonce=_nonce(nonce)))


def _attach_tracker() -> None:
    request.tracker = request.environ[TRACKER_ENVIRON_KEY]  # type: ignore[attr-defined]


def _request_tracker() -> Tracker | None:
    # Templates rendered out of a request (an email in a job) have no tracker: nothing to fire.
    if not has_request_context():
        return None
    tracker: Tracker | None = getattr(request, "tracker", None)
    return tracker


def _nonce(given: str | None) -> str | None:
    found = given or (getattr(request, "csp_nonce", None) if has_request_context() else None)
    return str(found) if found else None
