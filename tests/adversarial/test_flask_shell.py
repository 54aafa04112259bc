"""Hostile inputs and app failures through Flask (the extension over the WSGI core), where
Flask turns a view's exception into its own 500 page: the middleware sees a status, not an
exception. Real WSGI calls over ``httpx.WSGITransport`` (which closes the response).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, abort, request
from tracklayer_flask import TrackLayer as FlaskTrackLayer
from tracklayer_flask import get_engine

from tests.adversarial.conftest import Ledger, Observed, attribution_cookie, base_config
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeXConversionsAPI


def flask_shop(config: dict[str, Any]) -> Flask:
    app = Flask("adversarial_flask_shop")
    app.config["TRACKLAYER"] = config
    FlaskTrackLayer(app)

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        click = request.tracker.attribution  # type: ignore[attr-defined]
        return {"twclid": click.twclid if click else None}

    @app.post("/checkout")
    def checkout() -> dict[str, Any]:
        return request.tracker.convert("purchase", **request.get_json()).pixel_event()  # type: ignore[attr-defined,no-any-return]

    @app.post("/checkout-then-crash")
    def crash() -> str:
        request.tracker.convert("purchase", **request.get_json())  # type: ignore[attr-defined]
        raise RuntimeError("the order could not be saved after all")

    @app.post("/checkout-then-abort")
    def aborted() -> str:
        request.tracker.convert("purchase", **request.get_json())  # type: ignore[attr-defined]
        abort(503)

    return app


class FlaskShop:
    def __init__(self, app: Flask, observed: Observed) -> None:
        self.app = app
        self.observed = observed
        transport = httpx.WSGITransport(app=app)
        self.client = httpx.Client(transport=transport, base_url="http://shop.test")

    @property
    def engine(self) -> TrackLayer:
        with self.app.app_context():
            return get_engine()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        self.observed.status(response.status_code)
        return response


@pytest.fixture
def flask_shop_(
    tmp_path: Path, token_env: str, xapi: FakeXConversionsAPI, observed: Observed
) -> Iterator[FlaskShop]:
    shop = FlaskShop(flask_shop(base_config(tmp_path, api_base_url=xapi.base_url)), observed)
    yield shop
    shop.client.close()
    shop.engine.close(timeout=2)


def order(cid: str) -> dict[str, Any]:
    return {"conversion_id": cid, "email": f"{cid}@example.com", "value": 5.0}


@pytest.mark.adversarial_input
def test_flask_tampered_cookie(flask_shop_: FlaskShop) -> None:
    response = flask_shop_.request("GET", "/whoami", headers={"cookie": "tl_attr=eyJ2Ijox.x.y"})
    assert response.status_code == 200 and response.json()["twclid"] is None


@pytest.mark.adversarial_input
def test_flask_crlf_twclid(flask_shop_: FlaskShop) -> None:
    response = flask_shop_.request("GET", "/whoami?twclid=a%0d%0aSet-Cookie:%20x=1")
    assert response.status_code == 200 and attribution_cookie(response) is None


@pytest.mark.adversarial_input
def test_flask_huge_attribution_report(flask_shop_: FlaskShop) -> None:
    body = json.dumps({"twclid": "29q0w6g2k2m4a", "pad": "x" * 9000})
    response = flask_shop_.request(
        "POST", "/api/tracklayer/session-attribution", content=body,
        headers={"origin": "http://shop.test", "content-type": "application/json"},
    )
    assert response.status_code == 413 and attribution_cookie(response) is None


@pytest.mark.adversarial_input
def test_flask_bad_convert_is_the_views_error_not_a_lost_request(
    flask_shop_: FlaskShop,
) -> None:
    """A view passing garbage to convert() gets a ConversionError (its bug, its 500);
    nothing is queued from that request."""
    response = flask_shop_.request("POST", "/checkout",
                                   json={"conversion_id": "x", "value": -1, "email": "a@b.co"})
    assert response.status_code == 500
    flask_shop_.observed.server_errors = 0  # the view's own bug, shown as Flask's 500
    assert flask_shop_.engine.trace("x") is None


@pytest.mark.adversarial_fault
@pytest.mark.parametrize("path", ["/checkout-then-crash", "/checkout-then-abort"])
def test_flask_view_failing_after_convert_sends_nothing(
    flask_shop_: FlaskShop, xapi: FakeXConversionsAPI, ledger: Ledger, path: str
) -> None:
    assert flask_shop_.request("POST", path, json=order("flask_failed")).status_code >= 500
    flask_shop_.observed.server_errors = 0  # the view's failure is the case under test
    assert flask_shop_.request("POST", "/checkout", json=order("flask_ok")).status_code == 200
    assert flask_shop_.engine.flush(timeout=30)
    ledger.account({"flask_ok"}, xapi.accepted_ids().elements())
    assert flask_shop_.engine.trace("flask_failed") is None
