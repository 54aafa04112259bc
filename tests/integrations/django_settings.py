"""The smallest Django project TrackLayer's Django tests need (like django-cors-headers')."""

SECRET_KEY = "tracklayer-django-tests-0123456789abcdef"
ALLOWED_HOSTS = ["testserver", "shop.test", "127.0.0.1"]
USE_TZ = True
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "tracklayer_django",
    "examples.django_shop.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tracklayer_django.middleware.TrackLayerMiddleware",
]
ROOT_URLCONF = "tests.integrations.django_urls"
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
TRACKLAYER = {
    "pixelId": "o1a2b",
    "xEventMap": {"purchase": {"eventId": "o87ni", "label": "Purchase"}, "lead": "o87nf"},
    "outbox": "memory",
}
