"""``python -m examples.django_shop``: the shop on http://127.0.0.1:8000 against a local fake X."""

from __future__ import annotations

import logging
import os

from tracklayer_middleware.testing import FakeXConversionsAPI

SETTINGS = "examples.django_shop.shop_project.settings"


def main() -> None:
    """Start the bundled fake X, migrate, then ``runserver`` until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    port = int(os.environ.get("PORT", "8000"))
    os.environ["X_ADS_BEARER_TOKEN"] = "fake-x-token"
    with FakeXConversionsAPI(token="fake-x-token") as fake_x:
        os.environ["SHOP_FAKE_X_URL"] = fake_x.base_url  # read by shop_project/settings.py
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS)
        from django.core.management import execute_from_command_line

        execute_from_command_line(["manage.py", "migrate", "--verbosity=0"])
        print(f"fake X listening on {fake_x.base_url}")
        print(f"open http://127.0.0.1:{port}/pricing/?twclid=29q0w6g2k2m4a&utm_source=x")
        execute_from_command_line(["manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"])


if __name__ == "__main__":
    main()
