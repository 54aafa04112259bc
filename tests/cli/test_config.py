"""Settings loading: --config (TOML / the guide's JSON), TRACKLAYER_CONFIG, env vars."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_settings import GUIDE_DESTINATION, GUIDE_EVENT_MAP
from tracklayer_middleware.cli import main
from tracklayer_middleware.cli.config import load_settings, settings_from_env
from tracklayer_middleware.errors import ConfigurationError

from .conftest import SECRET_KEY


def test_toml_file(write_config: Callable[..., Path]) -> None:
    settings = load_settings(write_config(batch_size=100), environ={})
    assert settings.pixel_id == "o1a2b"
    assert settings.batch_size == 100
    assert settings.events["purchase"].event_id == "o87ni"


def test_toml_tracklayer_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        f'[tracklayer]\npixel_id = "o1a2b"\nsecret_key = "{SECRET_KEY}"\n'
        '[tracklayer.events]\npurchase = "o87ni"\n',
        encoding="utf-8",
    )
    assert load_settings(path, environ={}).events["purchase"].event_id == "o87ni"


def test_guide_json_destination_and_event_map(tmp_path: Path) -> None:
    guide = {
        "xAdsDestination": GUIDE_DESTINATION,
        "xEventMap": GUIDE_EVENT_MAP,
        "secretKey": SECRET_KEY,
    }
    path = tmp_path / "tracklayer.json"
    path.write_text(json.dumps(guide), encoding="utf-8")
    settings = load_settings(path, environ={})
    assert settings.endpoint_url == GUIDE_DESTINATION["endpoint"]
    assert settings.events["lead"].label == "Lead"


def test_config_env_var_names_the_file(write_config: Callable[..., Path]) -> None:
    path = write_config()
    settings = load_settings(environ={"TRACKLAYER_CONFIG": str(path)})
    assert settings.pixel_id == "o1a2b"


def test_env_vars_alone_and_typed() -> None:
    settings = load_settings(
        environ={
            "TRACKLAYER_PIXEL_ID": "o1a2b",
            "TRACKLAYER_SECRET_KEY": SECRET_KEY,
            "TRACKLAYER_EVENTS": "purchase=o87ni, lead=o87nf",
            "TRACKLAYER_BATCH_SIZE": "250",
            "TRACKLAYER_TIMEOUT_SECONDS": "10",
            "TRACKLAYER_SEND_EXTERNAL_ID": "yes",
            "TRACKLAYER_ALLOWED_ENVIRONMENTS": "production,staging",
        }
    )
    assert settings.batch_size == 250
    assert settings.timeout_seconds == 10.0
    assert settings.send_external_id is True
    assert settings.allowed_environments == ("production", "staging")
    assert set(settings.events) == {"purchase", "lead"}


def test_env_overrides_file(write_config: Callable[..., Path]) -> None:
    path = write_config()
    settings = load_settings(path, environ={"TRACKLAYER_ENVIRONMENT": "staging"})
    assert settings.environment == "staging"
    assert settings.dry_run


def test_env_events_json() -> None:
    settings = load_settings(
        environ={
            "TRACKLAYER_PIXEL_ID": "o1a2b",
            "TRACKLAYER_SECRET_KEY": SECRET_KEY,
            "TRACKLAYER_EVENTS": '{"purchase": {"eventId": "o87ni", "label": "Purchase"}}',
        }
    )
    assert settings.events["purchase"].label == "Purchase"


def test_env_typo_is_reported_with_suggestion() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(environ={"TRACKLAYER_PIXEL_ID": "o1a2b", "TRACKLAYER_SECRET_KEY": SECRET_KEY,
                               "TRACKLAYER_BATCH_SIZ": "10"})
    assert any("batch_size" in p for p in info.value.problems)


@pytest.mark.parametrize(
    ("name", "value"), [("TRACKLAYER_BATCH_SIZE", "many"), ("TRACKLAYER_ENABLED", "maybe")]
)
def test_env_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        settings_from_env({name: value})


def test_config_error_exits_2_listing_every_problem(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(pixel_id="", secret_key="", pixle="x")
    assert main(["--config", str(path), "doctor"]) == 2
    err = capsys.readouterr().err
    assert "pixel_id is empty" in err
    assert "secret_key is empty" in err
    assert "pixle" in err


@pytest.mark.parametrize("content", ["pixel_id = ", "{not json"])
def test_unreadable_file_exits_2(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ("bad.toml" if "=" in content else "bad.json")
    path.write_text(content, encoding="utf-8")
    assert main(["doctor", "--config", str(path)]) == 2
    assert "not valid" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["purge"]) == 2  # --sent-before is required
    assert main(["purge", "--sent-before", "last tuesday"]) == 2
    assert "not a time" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "status", "trace", "retry-dead", "purge", "doctor", "worker", "report"):
        assert command in out


def test_no_settings_at_all_says_where_to_put_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "no settings found" in err and "--config" in err and "TRACKLAYER_CONFIG" in err
