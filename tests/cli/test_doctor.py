"""``tracklayer doctor``: pure checks, exit codes, and the token never printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tracklayer_middleware.cli import main
from tracklayer_middleware.cli.doctor import (
    check_clock,
    check_events,
    check_secret_key,
    classify_probe,
    static_checks,
)
from tracklayer_middleware.settings import TrackLayerSettings

from .conftest import SECRET_KEY, TOKEN


def settings(**overrides: object) -> TrackLayerSettings:
    base: dict[str, object] = {
        "pixel_id": "o1a2b",
        "secret_key": SECRET_KEY,
        "events": {"purchase": "o87ni"},
        "environment": "production",
        "outbox": "memory",
    }
    return TrackLayerSettings.from_mapping({**base, **overrides})


def statuses(checks: list, name: str) -> list[str]:  # type: ignore[type-arg]
    return [c.status for c in checks if c.name == name]


def test_healthy_config_passes_and_masks_token(
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", TOKEN)
    assert main(["doctor", "--config", str(write_config())]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    assert f"present ({len(TOKEN)} chars)" in out
    assert "schema current" in out


def test_missing_token_fails_in_production_warns_in_dry_run() -> None:
    assert statuses(static_checks(settings(), {}), "credential X_ADS_BEARER_TOKEN") == ["fail"]
    dry = settings(environment="development")
    assert statuses(static_checks(dry, {}), "credential X_ADS_BEARER_TOKEN") == ["warn"]
    assert any("DRY-RUN" in c.detail for c in static_checks(dry, {}))


def test_oauth1_lists_all_four_variables() -> None:
    checks = static_checks(settings(auth="oauth1"), {"X_CONSUMER_KEY": "k"})
    creds = [c for c in checks if c.name.startswith("credential")]
    assert [c.status for c in creds] == ["ok", "fail", "fail", "fail"]


def test_weak_and_short_secret_keys() -> None:
    assert check_secret_key(settings(secret_key="a" * 40))[0].status == "fail"
    assert check_secret_key(settings(secret_key="abcdefghijklmnopqrst"))[0].status == "warn"
    rotated = check_secret_key(settings(secret_key_fallbacks=["old-key-0123456789abcdef"]))
    assert [c.status for c in rotated] == ["ok", "info"]
    same = check_secret_key(settings(secret_key_fallbacks=[SECRET_KEY]))
    assert same[1].status == "warn"


def test_event_map_checks() -> None:
    dup = check_events(settings(events={"purchase": "o87ni", "order": "o87ni"}))
    assert [c.status for c in dup] == ["ok", "warn"]
    assert check_events(settings(events={}))[0].status == "fail"
    assert check_events(settings(events={"page_view": "o87ne"}))[-1].status == "warn"


def test_memory_outbox_in_production_fails_and_external_id_warns() -> None:
    checks = static_checks(settings(send_external_id=True), {"X_ADS_BEARER_TOKEN": TOKEN})
    assert statuses(checks, "outbox") == ["fail"]
    assert statuses(checks, "external_id") == ["warn"]


def test_clock_skew_against_date_header() -> None:
    now = datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc)
    assert check_clock("Fri, 24 Apr 2026 09:42:10 GMT", now=now)[0].status == "ok"
    assert check_clock("Fri, 24 Apr 2026 09:30:00 GMT", now=now)[0].status == "warn"
    assert check_clock(None)[0].status == "skip"


@pytest.mark.parametrize(
    ("status", "verdict", "words"),
    [(400, "ok", "accepted"), (401, "fail", "rotate"), (403, "fail", "ownership"),
     (404, "fail", "pixel"), (503, "warn", "later"), (418, "fail", "unexpected")],
)
def test_probe_classification(status: int, verdict: str, words: str) -> None:
    check = classify_probe(status)
    assert check.status == verdict
    assert words in check.detail + check.hint


def test_json_output_and_strict(
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", TOKEN)
    path = write_config(api_base_url="http://127.0.0.1:9")  # a warning: not X's host
    assert main(["doctor", "--json", "--config", str(path)]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert {"name", "status", "detail", "hint"} <= set(checks[0])
    assert main(["doctor", "--strict", "--config", str(path)]) == 1


def test_unwritable_outbox_fails(
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", TOKEN)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = write_config(outbox=f"sqlite:///{blocker / 'sub' / 'outbox.sqlite3'}")
    assert main(["doctor", "--config", str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("token", "pixel_status", "code", "words"),
    [(TOKEN, 404, 0, "token and pixel were accepted"),
     ("an-old-token", 404, 1, "rotate the token"),
     (TOKEN, 403, 1, "check ownership")],
)
def test_probe_against_fake_x(
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
    pixel_status: int,
    code: int,
    words: str,
) -> None:
    from tracklayer_middleware.testing import FakeXConversionsAPI

    owned = ["o1a2b"] if pixel_status == 404 else ["zz9"]
    with FakeXConversionsAPI(pixel_ids=owned, token=TOKEN,
                             unknown_pixel_status=pixel_status) as fake:
        monkeypatch.setenv("X_ADS_BEARER_TOKEN", token)
        path = write_config(api_base_url=fake.base_url)
        assert main(["doctor", "--probe", "--config", str(path)]) == code
        out = capsys.readouterr().out
        assert words in out
        assert token not in out
        assert len(fake.accepted) == 0  # the probe never records a conversion
        assert "clock skew" in out
