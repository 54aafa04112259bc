"""``tracklayer demo`` end to end: every step works, nothing secret or personal is printed."""

from __future__ import annotations

import json
import os
import socket

import pytest

from tracklayer_middleware.cli import main
from tracklayer_middleware.cli.demo import DEMO_TOKEN_ENV, PURCHASE_ID, TWCLID, VISITOR_EMAIL
from tracklayer_middleware.identity import hash_email


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail any socket connection that is not to 127.0.0.1; returns the addresses used."""
    used: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        used.append(address)
        assert isinstance(address, tuple) and address[0] == "127.0.0.1", address
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    return used


def test_demo_walks_the_whole_story(
    capsys: pytest.CaptureFixture[str], loopback_only: list[object]
) -> None:
    assert main(["demo"]) == 0
    assert loopback_only  # it did talk to the fake X, and only over loopback
    captured = capsys.readouterr()
    out = captured.out + captured.err
    for step in range(1, 8):
        assert f"[{step}/7]" in out
    assert "Every step worked." in out
    assert f"twclid={TWCLID}" in out  # decoded cookie contents
    assert "HTTP 503" in out and "HTTP 200" in out  # the injected failure, then the retry
    assert f'"conversion_id":"{PURCHASE_ID}"' in out  # the Pixel twin's id
    assert f"{PURCHASE_ID} (x1)" in out  # accepted exactly once
    assert f"conversion {PURCHASE_ID}: sent" in out  # the closing trace
    # Never the raw email (as typed or normalized), the full hash, or the token.
    assert VISITOR_EMAIL.strip() not in out
    assert VISITOR_EMAIL.strip().lower() not in out
    assert hash_email(VISITOR_EMAIL) not in out
    assert hash_email(VISITOR_EMAIL)[:8] in out  # shortened hashes are shown
    assert DEMO_TOKEN_ENV not in os.environ  # the demo token is undone afterwards


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["problems"] == []
    assert [s["step"] for s in result["steps"]] == list(range(1, 8))
    assert result["trace"]["state"] == "sent"
    assert [a["http_status"] for a in result["trace"]["attempts"]] == [503, 200]
    assert result["status"]["by_state"]["sent"] == 2
