"""docs/django.md's set-up, applied to a fresh ``django-admin startproject``, works as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tracklayer_middleware.testing import FakeXConversionsAPI

REPO = Path(__file__).resolve().parents[2]
SETTINGS_ADDITIONS = '''
INSTALLED_APPS += ["tracklayer_django", "shop"]
MIDDLEWARE += ["tracklayer_django.middleware.TrackLayerMiddleware"]
TRACKLAYER = {
    "pixelId": "o1a2b",
    "apiVersion": "12",
    "tokenSecretName": "X_ADS_BEARER_TOKEN",
    "allowedEnvironments": ["production"],
    "xEventMap": {"purchase": {"eventId": "o87ni", "label": "Purchase"}},
    "environment": "production",
    "api_base_url": os.environ["FAKE_X_URL"],
    "outbox": "memory",
}
'''
VIEWS = '''
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def _buy(request, order):
    request.tracker.convert("purchase", conversion_id=f"ord_{order}_purchase", value=129.95,
                            currency="USD", email="test@example.com")
    return render(request, "thanks.html")


@csrf_exempt
def buy(request):
    return _buy(request, 1)


@csrf_exempt
async def abuy(request):
    return _buy(request, 2)


urlpatterns = [path("buy/", buy), path("abuy/", abuy)]
'''
THANKS = "{% load tracklayer %}<head>{% tracklayer_landing_script %}</head>{% tracklayer_pixel %}"
VISIT = '''
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()  # lets the test clients' "testserver" host in, as manage.py test does
from django.test import AsyncClient, Client
from asgiref.sync import async_to_sync
from tracklayer_django import get_engine

client = Client()
assert client.get("/buy/?twclid=29q0w6g2k2m4a").cookies["tl_attr"]
print(client.post("/buy/").content.decode())
async_client = AsyncClient()
async_client.cookies = client.cookies
print(async_to_sync(async_client.post)("/abuy/").content.decode())
assert get_engine().flush(10)
'''


def test_fresh_startproject_with_the_documented_settings(
    tmp_path: Path, fake_x: FakeXConversionsAPI
) -> None:
    env = {**os.environ, "FAKE_X_URL": fake_x.base_url, "PYTHONPATH": str(REPO),
           "DJANGO_SETTINGS_MODULE": "mysite.settings"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    assert run("-m", "django", "startproject", "mysite", ".").returncode == 0
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text("import os\n" + settings.read_text() + SETTINGS_ADDITIONS)
    (tmp_path / "shop" / "templates").mkdir(parents=True)
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "urls.py").write_text(VIEWS)
    (tmp_path / "shop" / "templates" / "thanks.html").write_text(THANKS)
    urls = tmp_path / "mysite" / "urls.py"
    admin_route = "path('admin/', admin.site.urls),"
    urls.write_text(
        urls.read_text()
        .replace(admin_route, f"{admin_route} path('', include('shop.urls')),")
        .replace("from django.urls import path", "from django.urls import include, path")
    )

    check = run("manage.py", "check")
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout

    visit = run("-c", VISIT)
    assert visit.returncode == 0, visit.stderr
    assert visit.stdout.count("conversion_id") == 2
    assert fake_x.accepted_ids() == {"ord_1_purchase": 1, "ord_2_purchase": 1}
    assert all({"twclid": "29q0w6g2k2m4a"} in c["identifiers"] for c in fake_x.accepted)
