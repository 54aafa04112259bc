"""Headless Debian chromium driven by Playwright, and the Flask example shop on a real server.

``.ci/services.sh`` installs chromium (``apt-get install chromium``) when it is missing; these
tests skip, loudly, only when ``/usr/bin/chromium`` is still not there.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tracklayer_flask import get_engine
from werkzeug.serving import make_server

from examples.flask_shop.app import create_app
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeXConversionsAPI

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


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the session."""
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


@dataclass
class Shop:
    """The running example shop: its URL and its TrackLayer engine."""

    url: str
    engine: TrackLayer


@pytest.fixture
def shop(request: pytest.FixtureRequest, fake_x: FakeXConversionsAPI) -> Iterator[Shop]:
    """examples/flask_shop served by werkzeug on 127.0.0.1 (random port) in a thread.

    Indirect parametrization adds TRACKLAYER settings (``{"consent_required": True}``).
    """
    extra = getattr(request, "param", {})
    app = create_app({"TRACKLAYER": {"api_base_url": fake_x.base_url, "outbox": "memory",
                                     "environment": "production", **extra}})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="flask-shop", daemon=True)
    thread.start()
    try:
        yield Shop(f"http://127.0.0.1:{server.server_port}", get_engine(app))
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        get_engine(app).close(timeout=1)
