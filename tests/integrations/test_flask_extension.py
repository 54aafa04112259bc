"""The Flask extension: app factory, config, request.tracker, Jinja globals, CLI, hand-off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, render_template_string, request
from tracklayer_flask import TrackLayer, current_tracker, get_engine

from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.testing import FakeXConversionsAPI

TWCLID = "29q0w6g2k2m4a"
PAGE = "<head>{{ tracklayer_landing_script(nonce='n0nce') }}</head><body>{{ tracklayer_pixel() }}"


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """Factory of Flask apps with TrackLayer over a memory outbox; engines closed after."""
    apps: list[Flask] = []

    def make(fake_x: FakeXConversionsAPI | None = None, **tracklayer: Any) -> Flask:
        app = shop_app(fake_x, **tracklayer)
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_engine(app).close(timeout=1)


def shop_app(fake_x: FakeXConversionsAPI | None, **tracklayer: Any) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "flask-tests-secret-key-0123456789"
    app.config["TRACKLAYER"] = {
        "pixelId": "o1a2b",
        "xEventMap": {"purchase": {"eventId": "o87ni", "label": "Purchase"}},
        "outbox": "memory",
        "environment": "production",
        "api_base_url": fake_x.base_url if fake_x else "http://127.0.0.1:9",
        **tracklayer,
    }
    TrackLayer().init_app(app)

    @app.post("/buy/<int:order>")
    def buy(order: int) -> str:
        assert current_tracker() is request.tracker
        request.tracker.convert("purchase", conversion_id=f"ord_{order}_purchase",
                                value=129.95, currency="USD", email="Test@Example.com")
        if order == 500:
            raise RuntimeError("payment provider down")
        return render_template_string(PAGE)

    return app


def client(app: Flask) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test")


def test_app_factory_keeps_state_on_the_app() -> None:
    extension = TrackLayer()
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        app.config["TRACKLAYER"] = {"pixelId": "o1a2b", "secretKey": "k" * 32, "outbox": "memory"}
        extension.init_app(app)
    assert first.extensions["tracklayer"] is not second.extensions["tracklayer"]
    with second.app_context():
        assert extension.engine is second.extensions["tracklayer"].engine
    for app in (first, second):
        get_engine(app).close(timeout=1)


def test_double_init_is_refused_clearly(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match="already installed on the Flask app"):
        TrackLayer(app)


def test_config_keys_and_secret_key_fallback() -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="flask-secret-key-0123456789", TRACKLAYER={"pixelId": "o1a2b"},
                      TRACKLAYER_OUTBOX="memory", TRACKLAYER_COOKIE_NAME="attr")
    TrackLayer(app)
    settings = get_engine(app).settings
    assert (settings.secret_key, settings.outbox, settings.cookie_name) == (
        "flask-secret-key-0123456789", "memory", "attr")
    get_engine(app).close(timeout=1)


def test_bad_config_lists_every_problem() -> None:
    app = Flask(__name__)
    app.config["TRACKLAYER"] = {"pixelId": "", "pixle_id": "x"}
    with pytest.raises(ConfigurationError) as raised:
        TrackLayer(app)
    text = str(raised.value)
    assert "secret_key is empty" in text and "pixel_id is empty" in text
    assert "Did you mean 'pixel_id'?" in text


def test_landing_then_purchase_reaches_x_with_pixel_twin(
    make_app: Callable[..., Flask], fake_x: FakeXConversionsAPI
) -> None:
    app = make_app(fake_x)
    with client(app) as http:
        landing = http.get(f"/?twclid={TWCLID}")  # a 404 page still captures the click
        assert "tl_attr=" in landing.headers["set-cookie"]
        page = http.post("/buy/10492").text
    assert '<script nonce="n0nce">' in page
    assert '"conversion_id":"ord_10492_purchase"' in page
    assert get_engine(app).flush(10)
    [sent] = fake_x.accepted
    assert sent["conversion_id"] == "ord_10492_purchase"
    assert {"twclid": TWCLID} in sent["identifiers"]


def test_a_500_drops_the_request_conversions(
    make_app: Callable[..., Flask], fake_x: FakeXConversionsAPI
) -> None:
    app = make_app(fake_x)
    with client(app) as http:
        assert http.post("/buy/500").status_code == 500
    assert get_engine(app).flush(10)
    assert fake_x.requests == []


def test_flask_test_client_hands_off_like_a_server(
    make_app: Callable[..., Flask], fake_x: FakeXConversionsAPI
) -> None:
    app = make_app(fake_x)
    assert app.test_client().post("/buy/1").status_code == 200
    assert get_engine(app).flush(10)
    assert fake_x.accepted_ids() == {"ord_1_purchase": 1}


def test_lazy_test_response_hands_off_at_close(
    make_app: Callable[..., Flask], fake_x: FakeXConversionsAPI
) -> None:
    app = make_app(fake_x)
    response = app.test_client().post("/buy/2", buffered=False)
    assert sum(get_engine(app).stats()["by_state"].values()) == 0  # "still being sent"
    response.close()
    assert get_engine(app).flush(10)
    assert fake_x.accepted_ids() == {"ord_2_purchase": 1}


def test_flask_tracklayer_cli_runs_on_the_app_engine(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    result = app.test_cli_runner().invoke(args=["tracklayer", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert '"by_state"' in result.output
    usage = app.test_cli_runner().invoke(args=["tracklayer", "no-such-command"])
    assert usage.exit_code == 2


def test_engine_outside_an_app_with_tracklayer_says_how_to_fix() -> None:
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="init_app"):
        get_engine()


def test_templates_rendered_out_of_a_request_fire_nothing(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with app.app_context():
        assert render_template_string("{{ tracklayer_pixel() }}") == ""
        assert "session-attribution" in render_template_string("{{ tracklayer_landing_script() }}")


def test_tracklayer_config_must_be_a_dict() -> None:
    app = Flask(__name__)
    app.config["TRACKLAYER"] = "o1a2b"
    with pytest.raises(ConfigurationError, match=r"must be a dict, not str"):
        TrackLayer(app)


def test_engine_starts_on_first_use_not_at_init_app(
    make_app: Callable[..., Flask], fake_x: FakeXConversionsAPI, tmp_path: Path
) -> None:
    outbox = f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
    backlog = make_app(fake_x, outbox=outbox, delivery="worker")  # queues, never sends
    get_engine(backlog).convert("purchase", conversion_id="ord_9_purchase", value=1.0,
                                currency="USD", email="a@example.com")
    app = make_app(fake_x, outbox=outbox)  # a sending app over that backlog
    status = app.test_cli_runner().invoke(args=["tracklayer", "status", "--json"])
    assert '"pending": 1' in status.output
    assert "not built yet" in repr(app.extensions["tracklayer"])
    assert fake_x.requests == []  # neither init_app nor `flask tracklayer status` sent it
    assert get_engine(app).flush(10)
    assert fake_x.accepted_ids() == {"ord_9_purchase": 1}
