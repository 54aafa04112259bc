"""A tiny Django project for the scale-out tests: a shop whose orders and conversions share
one database. The database comes from ``TLTEST_DATABASE``: a PostgreSQL URL or a
SQLite file path; the fake X's base URL from ``TLTEST_X_URL``."""

import os
from urllib.parse import urlsplit

_db = os.environ.get("TLTEST_DATABASE", ":memory:")
if _db.startswith("postgresql://"):
    _url = urlsplit(_db)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": _url.username,
            "PASSWORD": _url.password,
            "HOST": _url.hostname,
            "PORT": _url.port,
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _db,
                             "OPTIONS": {"timeout": 20}}}

SECRET_KEY = "scaleout-tests-secret-key-0123456789"
USE_TZ = True
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
ROOT_URLCONF = "tests.scaleout.djangoproj.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "tracklayer_django",
    "tests.scaleout.djangoproj.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
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
TRACKLAYER = {
    "PIXEL_ID": "o1a2b",
    "EVENTS": {"purchase": "o87ni"},
    "OUTBOX": "django",
    "ENVIRONMENT": "production",
    "API_BASE_URL": os.environ.get("TLTEST_X_URL", "http://127.0.0.1:9"),
    "RETRY_BASE_SECONDS": 0.05,
    "RETRY_MAX_SECONDS": 0.2,
}
