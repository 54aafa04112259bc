"""Fixtures shared by the whole test suite (keep additions small; several modules use it)."""

# The adversarial suite's reliability line at the end of every run (see tests/adversarial/).
pytest_plugins = ["tests.adversarial.summary"]


# --- fake X (tracklayer_middleware.testing) -------------------------------------------------
import pytest  # noqa: E402

from tracklayer_middleware.testing import FakeXConversionsAPI  # noqa: E402

FAKE_X_TOKEN = "test-token-not-a-secret"


@pytest.fixture
def fake_x(monkeypatch: pytest.MonkeyPatch):
    """A running fake X for pixel ``o1a2b``; X_ADS_BEARER_TOKEN is set to the token it expects."""
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", FAKE_X_TOKEN)
    with FakeXConversionsAPI(pixel_ids=["o1a2b"], token=FAKE_X_TOKEN) as fake:
        yield fake


@pytest.fixture
def x_conversion():
    """Factory of one valid X conversion dict (``Conversion.to_x()`` shape); kwargs override."""

    def make(conversion_id: str = "ord_1_purchase", **overrides):
        item = {
            "conversion_time": "2026-04-24T09:42:13.000Z",
            "event_id": "o87ni",
            "identifiers": [{"twclid": "29q0w6g2k2m4a"}],
            "conversion_id": conversion_id,
            "value": 129.95,
            "price_currency": "USD",
        }
        item.update(overrides)
        return item

    return make


# --- request-side engines (tests/test_asgi.py, test_wsgi.py, test_tracker.py, ...) ----------
from tracklayer_middleware.engine import TrackLayer  # noqa: E402

REQUEST_SETTINGS = {
    "pixel_id": "o1a2b",
    "secret_key": "request-tests-secret-key-0123456789",
    "events": {"purchase": {"eventId": "o87ni", "label": "Purchase"}, "lead": "o87nf"},
    "outbox": "memory",
    "delivery": "worker",  # rows stay in the outbox: tests look at them, nothing is sent
}


@pytest.fixture
def make_engine():
    """Factory of ``TrackLayer`` engines over a memory outbox (``REQUEST_SETTINGS`` + kwargs);
    closed at teardown."""
    engines: list[TrackLayer] = []

    def make(**overrides):
        engine = TrackLayer({**REQUEST_SETTINGS, **overrides})
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close(timeout=1)
