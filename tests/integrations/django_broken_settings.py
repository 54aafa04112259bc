"""``manage.py check --settings=`` target: the test project with a broken TRACKLAYER."""

from tests.integrations.django_settings import *  # noqa: F403

TRACKLAYER = {"pixelId": "", "secretKey": "", "xEventMap": {"purchase": {"eventId": ""}}}
MIDDLEWARE = ["tracklayer_django.middleware.TrackLayerMiddleware",
              "django.contrib.sessions.middleware.SessionMiddleware"]
