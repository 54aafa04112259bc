"""tracklayer_middleware.fastapi on plain Starlette: get_tracker, lifespan, running()."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tracklayer_middleware import TrackLayer, TrackLayerMiddleware
from tracklayer_middleware.fastapi import get_tracker, lifespan, running
from tracklayer_middleware.testing import FakeXConversionsAPI


def engine_for(fake_x: FakeXConversionsAPI) -> TrackLayer:
    return TrackLayer({"pixelId": "o1a2b", "secretKey": "k" * 32, "outbox": "memory",
                       "environment": "production", "api_base_url": fake_x.base_url,
                       "xEventMap": {"purchase": "o87ni"}})


def buy(request: Request) -> JSONResponse:
    conversion = get_tracker(request).convert(
        "purchase", conversion_id="ord_1_purchase", value=10.0, currency="USD",
        email="a@example.com")
    return JSONResponse({"pixel": conversion.pixel_event(),
                         "same_engine": request.state.tracklayer is not None})


def test_starlette_app_with_lifespan_delivers_by_shutdown(fake_x: FakeXConversionsAPI) -> None:
    tracklayer = engine_for(fake_x)
    app = Starlette(routes=[Route("/buy", buy, methods=["POST"])],
                    middleware=[Middleware(TrackLayerMiddleware, engine=tracklayer)],
                    lifespan=lifespan(tracklayer))
    with TestClient(app) as client:
        answer = client.post("/buy").json()
    assert answer["pixel"]["params"]["conversion_id"] == "ord_1_purchase"
    assert answer["same_engine"]
    assert fake_x.accepted_ids() == {"ord_1_purchase": 1}  # delivered during shutdown


def test_running_nests_in_an_app_lifespan(fake_x: FakeXConversionsAPI) -> None:
    tracklayer = engine_for(fake_x)
    events: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append("start")
        async with running(tracklayer):
            yield {"tracklayer": tracklayer}
        events.append(f"closed, X has {len(fake_x.accepted)}")

    app = Starlette(routes=[Route("/buy", buy, methods=["POST"])],
                    middleware=[Middleware(TrackLayerMiddleware, engine=tracklayer)],
                    lifespan=app_lifespan)
    with TestClient(app) as client:
        assert client.post("/buy").status_code == 200
    assert events == ["start", "closed, X has 1"]


def test_get_tracker_without_the_middleware_says_how_to_fix() -> None:
    app = Starlette(routes=[Route("/buy", buy, methods=["POST"])])
    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"Middleware\("):
        client.post("/buy")
