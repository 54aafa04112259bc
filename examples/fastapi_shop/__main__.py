"""``python -m examples.fastapi_shop``: the shop on http://127.0.0.1:8000 against a local fake X."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tracklayer_middleware.testing import FakeXConversionsAPI

from .app import create_app

FAKE_TOKEN = "fake-x-token"


@contextmanager
def shop_against_fake_x() -> Iterator[tuple[FastAPI, FakeXConversionsAPI]]:
    """The shop configured to send to a bundled fake X that runs for the ``with`` block."""
    os.environ["X_ADS_BEARER_TOKEN"] = FAKE_TOKEN
    with FakeXConversionsAPI(token=FAKE_TOKEN) as fake_x:
        app = create_app(
            {
                "api_base_url": fake_x.base_url,
                # Sending is allowed only because it goes to the local fake X.
                "environment": "fake-x",
                "allowedEnvironments": ["fake-x"],
                "outbox": "sqlite:///.tracklayer/fastapi_shop.sqlite3",
            }
        )
        yield app, fake_x


def main() -> None:
    """Start the bundled fake X, then serve the shop with uvicorn until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    port = int(os.environ.get("PORT", "8000"))
    with shop_against_fake_x() as (app, fake_x):
        print(f"fake X listening on {fake_x.base_url}")
        print(f"open http://127.0.0.1:{port}/pricing?twclid=29q0w6g2k2m4a&utm_source=x")
        uvicorn.run(app, host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
