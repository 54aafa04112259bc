"""Fixtures for the outbox, sender and engine tests: fast settings, conversions, outboxes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.delivery.memory_outbox import MemoryOutbox
from tracklayer_middleware.delivery.sqlite_outbox import SQLiteOutbox
from tracklayer_middleware.settings import TrackLayerSettings

#: Knobs that make retries, probes and leases fast enough for tests (never asserted as times).
FAST: dict[str, Any] = {
    "timeout_seconds": 2.0,
    "lease_seconds": 3.0,
    "retry_base_seconds": 0.005,
    "retry_max_seconds": 0.05,
    "shutdown_timeout": 5.0,
}


#: The configuration every engine test starts from (pixel o1a2b, purchase and lead events).
BASE: dict[str, Any] = {
    "pixel_id": "o1a2b",
    "secret_key": "test-secret-key-0123456789",
    "events": {"purchase": "o87ni", "lead": "o87nj"},
    **FAST,
}


@pytest.fixture
def base_config() -> dict[str, Any]:
    """A copy of ``BASE`` (development environment, so dry-run unless overridden)."""
    return dict(BASE)


@pytest.fixture
def settings() -> TrackLayerSettings:
    """Sending (production) settings with the memory outbox."""
    return TrackLayerSettings.from_mapping(BASE, environment="production", outbox="memory")


@pytest.fixture
def conversion(settings: TrackLayerSettings) -> Callable[..., Conversion]:
    """``conversion(i, **fields)``: a valid purchase with conversion_id ``ord_<i>``."""

    def make(i: int | str, event: str = "purchase", **fields: Any) -> Conversion:
        fields.setdefault("email", f"user{i}@example.com")
        fields.setdefault("value", 10.0)
        fields.setdefault("currency", "USD")
        return build_conversion(settings, event, conversion_id=f"ord_{i}", **fields)

    return make


@pytest.fixture(params=["sqlite", "memory"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteOutbox]:
    """Each backend in turn: a real SQLite file under tmp_path, and the memory outbox."""
    box = SQLiteOutbox(tmp_path / "outbox.sqlite3") if request.param == "sqlite" else MemoryOutbox()
    yield box
    box.close()
