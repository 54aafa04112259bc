"""Fixtures for the CLI tests: a clean environment and a config file under tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

SECRET_KEY = "cli-tests-0123456789-abcdefghijklmnop"
TOKEN = "tok-cli-tests-SECRET-9f8e7d"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TRACKLAYER_* or X token from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("TRACKLAYER_") or name.startswith("X_"):
            monkeypatch.delenv(name)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a TOML config (valid by default; keyword args replace or add lines)."""

    def write(**overrides: object) -> Path:
        values: dict[str, object] = {
            "pixel_id": "o1a2b",
            "secret_key": SECRET_KEY,
            "environment": "production",
            "outbox": f"sqlite:///{tmp_path / 'outbox.sqlite3'}",
            **overrides,
        }
        lines = [f"{key} = {_toml(value)}" for key, value in values.items() if value is not None]
        lines += ["", "[events]", 'lead = "o87nf"', 'purchase = "o87ni"']
        path = tmp_path / "tracklayer.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
