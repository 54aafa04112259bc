"""The configuration behind the examples' one-command runs (``python -m examples.<shop>``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from tracklayer_flask import get_engine

from examples.fastapi_shop.__main__ import shop_against_fake_x as fastapi_shop
from examples.flask_shop.__main__ import shop_against_fake_x as flask_shop
from tests.integrations.shop_story import EMAIL, TWCLID, assert_purchase_matches_pixel


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the commands keep their outbox under ./.tracklayer/
    monkeypatch.delenv("X_ADS_BEARER_TOKEN", raising=False)


def test_flask_command_sends_to_its_fake_x(tmp_path: Path) -> None:
    with flask_shop() as (app, fake_x):
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="http://127.0.0.1:5000") as shop:
            shop.get(f"/pricing?twclid={TWCLID}")
            page = shop.post("/checkout", data={"plan": "pro", "email": EMAIL}).text
        assert get_engine(app).flush(10)
        assert_purchase_matches_pixel(fake_x, page)
        get_engine(app).close(timeout=1)
    assert (tmp_path / ".tracklayer" / "flask_shop.sqlite3").exists()


def test_fastapi_command_sends_to_its_fake_x(tmp_path: Path) -> None:
    with fastapi_shop() as (app, fake_x):
        with TestClient(app, base_url="http://127.0.0.1:8000") as shop:
            shop.get(f"/pricing?twclid={TWCLID}")
            page = shop.post("/checkout", data={"plan": "pro", "email": EMAIL}).text
        assert_purchase_matches_pixel(fake_x, page)
    assert (tmp_path / ".tracklayer" / "fastapi_shop.sqlite3").exists()
