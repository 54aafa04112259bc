"""Settings of the example shop (a trimmed ``django-admin startproject`` + TrackLayer)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-example-shop-change-me-0123456789"
)
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "tracklayer_django",
    "examples.django_shop.shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "tracklayer_django.middleware.TrackLayerMiddleware",
]
ROOT_URLCONF = "examples.django_shop.shop_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "examples.django_shop.shop_project.wsgi.application"
ASGI_APPLICATION = "examples.django_shop.shop_project.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# TrackLayer: the guide's destination config and event map. The cookie is signed with
# SECRET_KEY. `python -m examples.django_shop` points api_base_url at a local fake X.
TRACKLAYER = {
    "pixelId": "o1a2b",
    "apiVersion": "12",
    "tokenSecretName": "X_ADS_BEARER_TOKEN",
    "allowedEnvironments": ["production"],
    "xEventMap": {
        "lead": {"eventId": "o87nf", "label": "Lead"},
        "begin_checkout": {"eventId": "o87nh", "label": "StartCheckout"},
        "purchase": {"eventId": "o87ni", "label": "Purchase"},
    },
    "outbox": f"sqlite:///{BASE_DIR / '.tracklayer' / 'outbox.sqlite3'}",
}
if os.environ.get("SHOP_FAKE_X_URL"):
    TRACKLAYER |= {
        "api_base_url": os.environ["SHOP_FAKE_X_URL"],
        # Sending is allowed only because it goes to the local fake X.
        "environment": "fake-x",
        "allowedEnvironments": ["fake-x"],
    }
