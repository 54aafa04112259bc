"""Headless Debian chromium driven by Playwright, and the Flask example shop on a real server.

``.ci/services.sh`` installs chromium (``apt-get install chromium``) when it is missing; these
tests skip, loudly, only when ``/usr/bin/chromium`` is still not there.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tracklayer_flask import get_engine
from werkzeug.serving import make_server

from examples.flask_shop.app import create_app
from tests.integrations.django_fixture import django_project
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeXConversionsAPI

__all__ = ["RECORD_TWQ", "Shop", "django_project", "serving", "shop_page"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per module: sync_playwright keeps an asyncio loop running in
    the main thread while it lives, which breaks every later test that runs an event loop."""
    if not CHROMIUM.exists():
        reason = (
            f"BROWSER TESTS SKIPPED: {CHROMIUM} is missing. Install it with "
            "`apt-get install -y chromium` (or run .ci/run, which does)."
        )
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# Replaces X's Pixel (uwt.js is never loaded: the base code sees twq defined) and records calls.
RECORD_TWQ = "window.__twq = []; window.twq = function () { window.__twq.push([...arguments]); };"


@dataclass
class Shop:
    """A running example shop: its URL, its TrackLayer engine, how its paths look."""

    url: str
    engine: TrackLayer
    prefix: str = ""
    slash: str = ""

    def page(self, name: str) -> str:
        """The URL of the shop's page ``name`` (``pricing``, ``checkout?plan=pro``, ...)."""
        path, _, query = name.partition("?")
        return f"{self.url}{self.prefix}/{path}{self.slash}" + (f"?{query}" if query else "")


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app with werkzeug on 127.0.0.1 (random port) in a thread; yield its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="shop-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@contextmanager
def shop_page(browser: Any, url: str) -> Iterator[Any]:
    """A fresh browser context that reaches ``url`` and nothing else, with ``twq`` recorded."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    context.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(url) else route.abort(),
    )
    context.add_init_script(RECORD_TWQ)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shop(request: pytest.FixtureRequest, fake_x: FakeXConversionsAPI) -> Iterator[Shop]:
    """An example shop on a real server: ``examples/flask_shop`` by default.

    Indirect parametrization picks ``("django", extra_settings)`` or ``("flask", ...)``; the
    extra TRACKLAYER settings are like ``{"consent_required": True}``.
    """
    framework, extra = getattr(request, "param", ("flask", {}))
    if framework == "django":
        request.getfixturevalue("django_project")
        yield from _django_shop(extra)
        return
    app = create_app({"TRACKLAYER": {"api_base_url": fake_x.base_url, "outbox": "memory",
                                     "environment": "production", **extra}})
    try:
        with serving(app) as url:
            yield Shop(url, get_engine(app))
    finally:
        get_engine(app).close(timeout=1)


def _django_shop(extra: dict[str, Any]) -> Iterator[Shop]:
    """examples/django_shop (its async checkout included) under Django's WSGI handler."""
    import tracklayer_django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    with override_settings(TRACKLAYER={**settings.TRACKLAYER, **extra}), serving(
        WSGIHandler()
    ) as url:
        yield Shop(url, tracklayer_django.get_engine(), prefix="/shop", slash="/")
