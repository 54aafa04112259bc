"""The ``django_project`` fixture (used by tests/integrations and tests/browser)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tracklayer_middleware.testing import FakeXConversionsAPI


@pytest.fixture
def django_project(fake_x: FakeXConversionsAPI) -> Iterator[None]:
    """Django configured with ``django_settings`` and TRACKLAYER pointed at the fake X.

    Applied through ``override_settings``, so it holds even when another test module set
    Django up first with its own project.
    """
    import django
    from django.apps import apps
    from django.conf import settings
    from django.test.utils import override_settings

    from tests.integrations import django_settings

    values: dict[str, Any] = {
        name: getattr(django_settings, name) for name in dir(django_settings) if name.isupper()
    }
    if not settings.configured:  # configure() rather than DJANGO_SETTINGS_MODULE: no env leak
        settings.configure(**values)
    if not apps.ready:
        django.setup()
    del values["DATABASES"]
    values["TRACKLAYER"] = {
        **django_settings.TRACKLAYER,
        "api_base_url": fake_x.base_url,
        "environment": "production",
    }
    with override_settings(**values):
        yield
