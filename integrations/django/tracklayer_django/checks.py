"""System checks: ``manage.py check`` reports a broken TrackLayer config before production does.

Every problem ``TrackLayerSettings.from_mapping()`` would raise at start-up is reported here as
an ``Error`` instead (one per problem, so all are seen at once), plus what only Django knows:
middleware order, cookie names that collide, and a token missing where sending is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.settings import TrackLayerSettings

from .conf import conf

MIDDLEWARE_PATH = "tracklayer_django.middleware.TrackLayerMiddleware"
# A ConfigurationError problem's first word tells which setting it is about.
_PROBLEM_IDS = (
    ("unknown setting", "tracklayer.E002"),
    ("secret_key", "tracklayer.E003"),
    ("pixel_id", "tracklayer.E004"),
    ("event", "tracklayer.E005"),
)
_GENERIC_PROBLEM_ID = "tracklayer.E006"
# Chrome caps cookie lifetimes at 400 days and silently shortens longer ones.
_BROWSER_MAX_COOKIE_AGE = 400 * 24 * 3600


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``settings.TRACKLAYER`` is valid, and what it needs from the environment is there."""
    raw = conf.TRACKLAYER
    if raw is None:
        return [
            Error(
                "settings.TRACKLAYER is not set.",
                hint='Add TRACKLAYER = {"pixelId": "o1a2b", "xEventMap": {"purchase": '
                '{"eventId": "o87ni"}}} to your settings.',
                id="tracklayer.E001",
            )
        ]
    if not isinstance(raw, dict):
        return [Error("settings.TRACKLAYER must be a dict.", id="tracklayer.E001")]
    try:
        tracklayer = conf.build()
    except ConfigurationError as exc:
        return [_problem_error(problem) for problem in exc.problems]
    except ImportError as exc:
        return [Error(f"consent_resolver cannot be imported: {exc}", id=_GENERIC_PROBLEM_ID)]
    return [*_token_errors(tracklayer), *_cookie_errors(tracklayer)]


def check_middleware(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The middleware is installed, after SessionMiddleware and AuthenticationMiddleware."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if MIDDLEWARE_PATH not in middleware:
        return [
            Error(
                f"{MIDDLEWARE_PATH!r} is not in MIDDLEWARE: no request.tracker, no landing "
                "capture, no attribution endpoint.",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE, after SessionMiddleware and "
                "AuthenticationMiddleware.",
                id="tracklayer.E010",
            )
        ]
    messages: list[CheckMessage] = []
    position = middleware.index(MIDDLEWARE_PATH)
    for before in (
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ):
        if before in middleware[position + 1 :]:
            messages.append(
                Warning(
                    f"{MIDDLEWARE_PATH!r} comes before {before!r}: a consent_resolver "
                    "cannot read request.session or request.user.",
                    hint=f"Move TrackLayerMiddleware below {before.rsplit('.', 1)[-1]}. "
                    "(Its attribution endpoint never needs a CSRF token, wherever it sits: "
                    "it is protected by an Origin check.)",
                    id="tracklayer.W001",
                )
            )
    return messages


def check_deploy(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: a site with DEBUG off that would only dry-run is likely a mistake."""
    try:
        tracklayer = conf.build()
    except (ConfigurationError, ImportError):
        return []  # already reported by check_settings
    if settings.DEBUG or not tracklayer.dry_run:
        return []
    return [
        Warning(
            f"TrackLayer runs dry: environment {tracklayer.environment!r} is not in "
            f"allowed_environments {list(tracklayer.allowed_environments)}, so nothing is sent "
            "to X.",
            hint="Set TRACKLAYER_ENVIRONMENT=production (or TRACKLAYER['environment']) on the "
            "production hosts.",
            id="tracklayer.W002",
        )
    ]


def _problem_error(problem: str) -> Error:
    for prefix, check_id in _PROBLEM_IDS:
        if problem.startswith(prefix):
            return Error(problem, id=check_id)
    return Error(problem, id=_GENERIC_PROBLEM_ID)


def _token_errors(tracklayer: TrackLayerSettings) -> list[CheckMessage]:
    if tracklayer.dry_run or not tracklayer.enabled:
        return []
    if tracklayer.auth == "oauth1":
        names = [
            tracklayer.oauth1_consumer_key_env,
            tracklayer.oauth1_consumer_secret_env,
            tracklayer.oauth1_access_token_env,
            tracklayer.oauth1_access_token_secret_env,
        ]
    else:
        names = [tracklayer.token_env]
    missing = [name for name in names if not os.environ.get(name, "").strip()]
    if not missing:
        return []
    return [
        Error(
            f"TrackLayer may send from environment {tracklayer.environment!r}, but the "
            f"environment variable(s) {', '.join(missing)} are not set: conversions would wait "
            "in the outbox, paused.",
            hint="Export the X token on this host (it is never read from settings files).",
            id="tracklayer.E007",
        )
    ]


def _cookie_errors(tracklayer: TrackLayerSettings) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    name = tracklayer.cookie_name
    if name.startswith(("__Host-", "__Secure-")) and tracklayer.cookie_secure is False:
        messages.append(
            Error(
                f"cookie_name {name!r} has a prefix browsers accept only on Secure cookies, "
                "but cookie_secure is False: every browser will drop it.",
                hint="Drop the prefix (TrackLayer adds __Host- by itself on HTTPS) or set "
                "cookie_secure to None.",
                id="tracklayer.E008",
            )
        )
    others = {
        getattr(settings, "SESSION_COOKIE_NAME", "sessionid"),
        getattr(settings, "CSRF_COOKIE_NAME", "csrftoken"),
        getattr(settings, "LANGUAGE_COOKIE_NAME", "django_language"),
    }
    if name in others or f"__Host-{name}" in others:
        messages.append(
            Error(
                f"cookie_name {name!r} is also the name of a Django cookie: one overwrites "
                "the other.",
                hint="Keep the default 'tl_attr' or choose another unique name.",
                id="tracklayer.E009",
            )
        )
    if tracklayer.cookie_max_age > _BROWSER_MAX_COOKIE_AGE:
        messages.append(
            Warning(
                f"cookie_max_age is {tracklayer.cookie_max_age // 86400} days; browsers cap "
                "cookies at 400 days, so attribution will expire earlier than configured.",
                hint="Use at most 400 days (X's own tag keeps twclid for about 390).",
                id="tracklayer.W003",
            )
        )
    return messages
