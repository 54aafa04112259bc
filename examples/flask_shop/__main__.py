"""``python -m examples.flask_shop``: the shop on http://127.0.0.1:5000 against a local fake X."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from tracklayer_middleware.testing import FakeXConversionsAPI

from .app import create_app

FAKE_TOKEN = "fake-x-token"


@contextmanager
def shop_against_fake_x() -> Iterator[tuple[Flask, FakeXConversionsAPI]]:
    """The shop configured to send to a bundled fake X that runs for the ``with`` block."""
    os.environ["X_ADS_BEARER_TOKEN"] = FAKE_TOKEN
    with FakeXConversionsAPI(token=FAKE_TOKEN) as fake_x:
        app = create_app(
            {
                "TRACKLAYER": {
                    "api_base_url": fake_x.base_url,
                    # Sending is allowed only because it goes to the local fake X.
                    "environment": "fake-x",
                    "allowed_environments": ["fake-x"],
                    "outbox": "sqlite:///.tracklayer/flask_shop.sqlite3",
                }
            }
        )
        yield app, fake_x


def main() -> None:
    """Start the bundled fake X, then serve the shop until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    port = int(os.environ.get("PORT", "5000"))
    with shop_against_fake_x() as (app, fake_x):
        print(f"fake X listening on {fake_x.base_url}")
        print(f"open http://127.0.0.1:{port}/pricing?twclid=29q0w6g2k2m4a&utm_source=x")
        app.run(host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
