"""Harness of the adversarial suite: known secrets, an observer for bad inputs, a ledger for faults.

Every case is one test marked ``adversarial_input``, ``adversarial_fault`` or
``adversarial_leak``; the fixtures here record what the case saw (5xx answers and crashes,
lost and doubled conversion ids, leaks) into the test report, and ``summary.py`` adds them
up into the line printed at the end of ``make test``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.adversarial.summary import DOUBLED, LOST, SERVER_ERRORS
from tracklayer_middleware.errors import TrackLayerError
from tracklayer_middleware.settings import TrackLayerSettings

T = TypeVar("T")

# Sentinels the leak scanner hunts for; nothing but the fake X may ever see TOKEN.
TOKEN = "XTOKEN-adversarial-SENTINEL-7f3a9c51"
TOKEN_ENV = "TL_ADVERSARIAL_TOKEN"
SECRET_KEY = "adversarial-suite-signing-key-2026"
OLD_SECRET_KEY = "adversarial-suite-retired-key-2025"
PIXEL_ID = "o1a2b"
EVENTS: Mapping[str, Any] = {
    "purchase": {"eventId": "o87ni", "label": "Purchase"},
    "lead": {"eventId": "o87nf", "label": "Lead"},
}


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A valid production config whose outbox lives under ``tmp_path``; overrides win."""
    config: dict[str, Any] = {
        "pixelId": PIXEL_ID,
        "secret_key": SECRET_KEY,
        "xEventMap": dict(EVENTS),
        "environment": "production",
        "token_env": TOKEN_ENV,
        "outbox": f"sqlite:///{tmp_path / 'outbox.sqlite3'}",
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "timeout_seconds": 2.0,
        "lease_seconds": 10.0,
        "shutdown_timeout": 2.0,
    }
    config.update(overrides)
    return config


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The X token, set in the environment the way production sets it."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


@pytest.fixture
def make_settings(tmp_path: Path, token_env: str) -> Callable[..., TrackLayerSettings]:
    """Build validated settings from ``base_config`` plus overrides."""

    def make(**overrides: Any) -> TrackLayerSettings:
        return TrackLayerSettings.from_mapping(base_config(tmp_path, **overrides))

    return make


class Observed:
    """What a bad-input case provoked: 5xx answers and crashes (non-TrackLayerError raises)."""

    def __init__(self) -> None:
        self.server_errors = 0
        self.statuses: list[int] = []

    def status(self, code: int) -> int:
        self.statuses.append(code)
        if code >= 500:
            self.server_errors += 1
        return code

    def calls(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | TrackLayerError:
        """Run ``fn``: a ``TrackLayerError`` comes back (a clean refusal); anything else crashes."""
        try:
            return fn(*args, **kwargs)
        except TrackLayerError as exc:
            return exc
        except Exception:
            self.server_errors += 1
            raise


@pytest.fixture
def observed(request: pytest.FixtureRequest) -> Iterator[Observed]:
    seen = Observed()
    yield seen
    request.node.user_properties.append((SERVER_ERRORS, seen.server_errors))


class Ledger:
    """Accounts for every conversion id of a fault case: 0 lost, 0 doubled by our side."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def account(
        self,
        expected: Iterable[str],
        delivered: Iterable[str],
        *,
        resend_allowed: Iterable[str] = (),
    ) -> None:
        """``delivered``: conversion ids X accepted, one entry per acceptance.

        An id accepted twice is doubled unless it is in ``resend_allowed`` (an ambiguous
        failure where resending the SAME conversion_id is the correct, X-deduplicated move);
        an id we never created is doubled too (a second id minted for one action).
        """
        want = set(expected)
        got = Counter(delivered)
        may_repeat = set(resend_allowed)
        lost = sorted(want - set(got))
        doubled = sorted(
            cid for cid, n in got.items() if cid not in want or (n > 1 and cid not in may_repeat)
        )
        self._node.user_properties.append((LOST, len(lost)))
        self._node.user_properties.append((DOUBLED, len(doubled)))
        assert not lost, f"lost conversion ids: {lost[:10]} (of {len(lost)})"
        assert not doubled, f"doubled conversion ids: {doubled[:10]} (of {len(doubled)})"


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    return Ledger(request.node)
