"""``manage.py check`` flags every TrackLayer misconfiguration Django can see."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("django_project")
REPO = Path(__file__).resolve().parents[2]
GOOD = {"pixelId": "o1a2b", "xEventMap": {"purchase": {"eventId": "o87ni"}}, "outbox": "memory"}


def check_ids(**overrides: Any) -> list[str]:
    from django.core.checks import run_checks
    from django.test.utils import override_settings

    with override_settings(**{"DEBUG": True, **overrides}):  # DEBUG off adds W002 (dry run)
        return sorted(m.id for m in run_checks(include_deployment_checks=True)
                      if m.id and m.id.startswith("tracklayer."))


def test_a_good_config_passes() -> None:
    assert check_ids(TRACKLAYER=GOOD) == []


def test_missing_settings_dict() -> None:
    from django.conf import settings
    from django.test.utils import override_settings

    with override_settings():
        del settings.TRACKLAYER
        assert check_ids() == ["tracklayer.E001"]


def test_every_settings_problem_is_its_own_error() -> None:
    broken = {"pixelId": "not a pixel!", "secretKey": "", "pixle_id": "x",
              "xEventMap": {"purchase": {"eventId": ""}, "Bad Name": "o87nf"}}
    ids = check_ids(TRACKLAYER=broken)
    assert ids.count("tracklayer.E002") == 1  # unknown key, with a suggestion
    assert "tracklayer.E003" in ids  # secret
    assert "tracklayer.E004" in ids  # pixel id
    assert ids.count("tracklayer.E005") == 2  # empty event id, bad event name


def test_errors_carry_the_fix_in_their_message() -> None:
    from django.core.checks import run_checks
    from django.test.utils import override_settings

    with override_settings(TRACKLAYER={**GOOD, "pixle_id": "o1a2b"}):
        [message] = [m for m in run_checks() if m.id == "tracklayer.E002"]
    assert "Did you mean 'pixel_id'?" in message.msg


def test_token_missing_where_sending_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_ADS_BEARER_TOKEN", raising=False)
    assert check_ids(TRACKLAYER={**GOOD, "environment": "production"}) == ["tracklayer.E007"]
    assert check_ids(TRACKLAYER={**GOOD, "environment": "staging"}) == []


def test_dry_run_on_a_production_like_site_is_a_deploy_warning() -> None:
    assert check_ids(TRACKLAYER={**GOOD, "environment": "staging"}, DEBUG=False) == [
        "tracklayer.W002"
    ]


def test_middleware_missing_or_before_sessions() -> None:
    assert check_ids(TRACKLAYER=GOOD, MIDDLEWARE=[]) == ["tracklayer.E010"]
    early = ["tracklayer_django.middleware.TrackLayerMiddleware",
             "django.contrib.sessions.middleware.SessionMiddleware"]
    assert check_ids(TRACKLAYER=GOOD, MIDDLEWARE=early) == ["tracklayer.W001"]


def test_cookie_settings_browsers_reject() -> None:
    assert check_ids(TRACKLAYER={**GOOD, "cookie_name": "__Host-attr", "cookie_secure": False}) \
        == ["tracklayer.E008"]
    assert check_ids(TRACKLAYER={**GOOD, "cookie_name": "sessionid"}) == ["tracklayer.E009"]
    assert check_ids(TRACKLAYER={**GOOD, "cookie_max_age": 500 * 86400}) == ["tracklayer.W003"]


def test_manage_py_check_fails_on_a_broken_config() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.integrations.django_broken_settings",
           "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    for check_id in ("tracklayer.E003", "tracklayer.E004", "tracklayer.E005", "tracklayer.W001"):
        assert check_id in result.stderr
