"""``tracklayer doctor``: the guide's troubleshooting list, checked before production.

Each check is a pure function of the settings (and the environment, clock, outbox) returning
``Check`` rows; only ``probe_endpoint`` touches the network, and only when asked (``--probe``).
Secrets are never printed: a token is reported as ``present (N chars)`` or ``missing``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx

from ..errors import ConfigurationError, TrackLayerError
from ..settings import MIN_SECRET_KEY_LENGTH, TrackLayerSettings
from .output import EXIT_OK, EXIT_PROBLEMS, secret_presence, table

if TYPE_CHECKING:
    from .context import CommandContext

Status = Literal["ok", "info", "warn", "fail", "skip"]

RECOMMENDED_SECRET_LENGTH = 32
MAX_CLOCK_SKEW_SECONDS = 300
# The guide's optimization events; a setup that maps none of them is probably unfinished.
CORE_EVENTS = ("lead", "sign_up", "begin_checkout", "purchase")
_WEAK_SECRETS = frozenset(
    {"secret", "changeme", "change-me", "password", "development", "dev", "test", "insecure"}
)


@dataclass(frozen=True)
class Check:
    """One doctor finding: ``fail`` rows make the exit code 1 (``warn`` too with --strict)."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        """JSON-safe form for ``--json``."""
        return asdict(self)


def check_token(settings: TrackLayerSettings, environ: Mapping[str, str]) -> list[Check]:
    """The credentials named by the settings are set (values never shown)."""
    missing_status: Status = "warn" if settings.dry_run else "fail"
    checks = []
    for name in settings.credential_envs:
        value = environ.get(name, "").strip()
        checks.append(
            Check(
                f"credential {name}",
                "ok" if value else missing_status,
                f"{settings.auth} auth: {secret_presence(value)}",
                "" if value else (
                    f"export {name}=... on every host that sends (never commit it); "
                    "the browser must never see it."
                ),
            )
        )
    return checks


def check_endpoint(settings: TrackLayerSettings) -> list[Check]:
    """Pixel id, API version and endpoint agree (settings validation enforces the rest)."""
    checks = [
        Check("endpoint", "ok", f"POST {settings.endpoint_url} (pixel {settings.pixel_id}, "
              f"API v{settings.api_version})")
    ]
    if settings.api_base_url.rstrip("/") != "https://ads-api.x.com":
        checks.append(
            Check(
                "api base url",
                "warn",
                f"api_base_url is {settings.api_base_url}, not X's https://ads-api.x.com",
                "fine for tests against a fake X; production must use https://ads-api.x.com.",
            )
        )
    return checks


def check_events(settings: TrackLayerSettings) -> list[Check]:
    """Events are mapped, one X event per canonical event, the core ones present."""
    if not settings.events:
        return [
            Check(
                "event map",
                "fail",
                "no events mapped: convert() will reject every event",
                "add events = {purchase = 'o87ni', lead = 'o87nf'} with ids from Events Manager.",
            )
        ]
    mapped = ", ".join(
        f"{name}→{m.event_id}" for name, m in sorted(settings.events.items())
    )
    checks = [Check("event map", "ok", mapped)]
    by_id: dict[str, list[str]] = {}
    for name, mapping in settings.events.items():
        by_id.setdefault(mapping.pixel_event_id(settings.pixel_id), []).append(name)
    for event_id, names in sorted(by_id.items()):
        if len(names) > 1:
            checks.append(
                Check(
                    "event map",
                    "warn",
                    f"{', '.join(sorted(names))} all map to {event_id}",
                    "X will count them as one kind of action; map each to its own event.",
                )
            )
    if not any(name in settings.events for name in CORE_EVENTS):
        checks.append(
            Check(
                "event map",
                "warn",
                f"none of the guide's optimization events ({', '.join(CORE_EVENTS)}) is mapped",
                "send the actions your media team optimizes against.",
            )
        )
    return checks


def check_environment(settings: TrackLayerSettings) -> list[Check]:
    """Announce dry-run loudly: a staging box that silently sends nothing is a classic."""
    allowed = ", ".join(settings.allowed_environments) or "(none)"
    if not settings.enabled:
        return [Check("environment", "warn", "enabled = false: nothing is queued or sent",
                      "set enabled = true when ready.")]
    if settings.dry_run:
        return [
            Check(
                "environment",
                "warn",
                f"environment {settings.environment!r} is not in allowed_environments "
                f"({allowed}): DRY-RUN, conversions are logged but never sent to X",
                "set TRACKLAYER_ENVIRONMENT=production on the hosts that should send.",
            )
        ]
    return [Check("environment", "ok", f"{settings.environment!r} may send (allowed: {allowed})")]


def check_secret_key(settings: TrackLayerSettings) -> list[Check]:
    """The cookie signing key is long, not a placeholder, and rotation is tidy."""
    key = settings.secret_key
    checks: list[Check] = []
    if key.strip().lower() in _WEAK_SECRETS or len(set(key)) < 6:
        checks.append(Check("secret key", "fail", f"secret_key is a placeholder ({len(key)} chars)",
                            _SECRET_HINT))
    elif len(key) < MIN_SECRET_KEY_LENGTH:
        checks.append(Check("secret key", "fail", f"secret_key is only {len(key)} chars",
                            _SECRET_HINT))
    elif len(key) < RECOMMENDED_SECRET_LENGTH:
        checks.append(Check("secret key", "warn",
                            f"secret_key is {len(key)} chars (recommended ≥ "
                            f"{RECOMMENDED_SECRET_LENGTH})", _SECRET_HINT))
    else:
        checks.append(Check("secret key", "ok", f"{secret_presence(key)}"))
    fallbacks = settings.secret_key_fallbacks
    if key in fallbacks:
        checks.append(Check("key rotation", "warn", "secret_key is also listed in "
                            "secret_key_fallbacks", "remove it from the fallbacks."))
    elif fallbacks:
        days = settings.cookie_max_age / 86400
        checks.append(Check("key rotation", "info",
                            f"{len(fallbacks)} fallback key(s) still verify old cookies",
                            f"remove them {days:g} days (cookie_max_age) after the rotation."))
    return checks


_SECRET_HINT = (
    "use a long random string: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


def check_cookie(settings: TrackLayerSettings) -> list[Check]:
    """Cookie flags that a production site should have."""
    days = settings.cookie_max_age / 86400
    checks = [Check("cookie", "ok", f"{settings.cookie_name}, max-age {days:g} days, "
                    f"HttpOnly, SameSite=Lax, Secure={_secure_word(settings.cookie_secure)}")]
    if settings.cookie_secure is False and not settings.dry_run:
        checks.append(Check("cookie", "warn", "cookie_secure = false in a sending environment",
                            "serve the site over HTTPS and leave cookie_secure unset (auto)."))
    if days > 390:
        checks.append(Check("cookie", "warn", f"max-age {days:g} days is longer than browsers "
                            "keep first-party cookies (~400 days)", "use 90 days (default)."))
    return checks


def _secure_word(value: bool | None) -> str:
    return "auto (from the request scheme)" if value is None else str(value).lower()


def check_delivery(settings: TrackLayerSettings) -> list[Check]:
    """Delivery mode and payload options worth a second look."""
    checks = [Check("delivery", "ok", f"delivery={settings.delivery}, outbox={settings.outbox}")]
    if settings.delivery == "worker":
        checks.append(Check("delivery", "info", "web processes only enqueue",
                            "run `tracklayer worker` (systemd/supervisor) or nothing is sent."))
    if settings.outbox == "memory" and not settings.dry_run:
        checks.append(Check("outbox", "fail", "outbox = memory loses queued conversions on "
                            "restart", "use sqlite:///path (or django / celery)."))
    if settings.send_external_id:
        checks.append(Check("external_id", "warn", "send_external_id = true: X does not "
                            "document external_id as an identifier",
                            "keep it off unless X support asked for it."))
    return checks


def check_clock(server_date: str | None, *, now: datetime | None = None) -> list[Check]:
    """Local clock vs X's ``Date`` header (conversion_time is stamped locally)."""
    if not server_date:
        return [Check("clock skew", "skip", "needs --probe (compares with X's Date header)")]
    try:
        remote = parsedate_to_datetime(server_date)
    except (TypeError, ValueError):
        return [Check("clock skew", "skip", f"unreadable Date header {server_date!r}")]
    local = now or datetime.now(timezone.utc)
    skew = (local - remote).total_seconds()
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return [Check("clock skew", "warn", f"local clock is {skew:+.0f}s off the server's",
                      "enable NTP (chrony/systemd-timesyncd): conversion times are stamped here.")]
    return [Check("clock skew", "ok", f"{skew:+.0f}s against the server's Date header")]


# What a probe's HTTP status means. The probe posts {"conversions": []}: X authenticates,
# authorizes and resolves the pixel before validating the body, so a 400 about the empty
# list proves the first three passed — and an empty list can never record a conversion.
PROBE_VERDICTS: dict[int, tuple[Status, str, str]] = {
    200: ("ok", "X accepted the request: token, account and pixel are in one context", ""),
    400: ("ok", "X rejected the empty test body, so the token and pixel were accepted", ""),
    401: ("fail", "401 AUTH_FAILED: the token is invalid, expired, or its app lacks Ads API "
          "access", "rotate the token and verify the advertiser context first."),
    403: ("fail", "403 tag access denied: token, advertiser account and pixel are not in one "
          "permitted context", "check ownership instead of retrying the same payload."),
    404: ("fail", "404: the pixel (or its events) is not found for this account",
          "check pixel_id and the event ids against Events Manager."),
    429: ("warn", "429 rate limited right now", "try again later; the sender honours Retry-After."),
}


def classify_probe(status: int) -> Check:
    """The verdict for one probe answer."""
    if status in PROBE_VERDICTS:
        verdict, detail, hint = PROBE_VERDICTS[status]
    elif status >= 500:
        verdict, detail, hint = "warn", f"X answered {status} (server error)", "try again later."
    else:
        verdict, detail, hint = "fail", f"unexpected HTTP {status}", "see X's status page."
    return Check("probe", verdict, detail, hint)


def probe_endpoint(
    settings: TrackLayerSettings,
    auth: httpx.Auth,
    *,
    transport: httpx.BaseTransport | None = None,
) -> list[Check]:
    """Send one harmless request (an empty conversions list) and classify the answer."""
    try:
        with httpx.Client(
            timeout=min(settings.timeout_seconds, 15.0),
            follow_redirects=False,
            transport=transport,
        ) as client:
            response = client.post(settings.endpoint_url, json={"conversions": []}, auth=auth)
    except ConfigurationError as exc:  # MissingCredentialsError: raised before sending
        return [Check("probe", "fail", "; ".join(exc.problems)), *check_clock(None)]
    except httpx.HTTPError as exc:
        return [
            Check("probe", "fail", f"could not reach {settings.endpoint_url}: "
                  f"{type(exc).__name__}", "check DNS, proxy and firewall for outbound HTTPS."),
            *check_clock(None),
        ]
    verdict = classify_probe(response.status_code)
    said = _x_error(response)
    if said:
        verdict = replace(verdict, detail=f"{verdict.detail} (X: {said})")
    return [verdict, *check_clock(response.headers.get("date"))]


def _x_error(response: httpx.Response) -> str:
    """X's first error as ``CODE: message`` (never echoes request headers)."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code')}: {first.get('message')}"[:200]
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def static_checks(
    settings: TrackLayerSettings, environ: Mapping[str, str] | None = None
) -> list[Check]:
    """Every check that needs neither the network nor the outbox."""
    env = os.environ if environ is None else environ
    groups: Iterable[Callable[[], list[Check]]] = (
        lambda: check_token(settings, env),
        lambda: check_endpoint(settings),
        lambda: check_events(settings),
        lambda: check_environment(settings),
        lambda: check_secret_key(settings),
        lambda: check_cookie(settings),
        lambda: check_delivery(settings),
    )
    return [check for group in groups for check in group()]


def has_problems(checks: Iterable[Check], *, strict: bool = False) -> bool:
    """True when a check failed (or, with ``strict``, warned)."""
    bad = {"fail", "warn"} if strict else {"fail"}
    return any(c.status in bad for c in checks)


def render(checks: Sequence[Check]) -> str:
    """The human report: one row per check, hints indented under failures and warnings."""
    rows = []
    for check in checks:
        rows.append([check.status.upper(), check.name, check.detail])
        if check.hint and check.status in ("fail", "warn", "info"):
            rows.append(["", "", f"  → {check.hint}"])
    counts = {s: sum(c.status == s for c in checks) for s in ("fail", "warn")}
    verdict = (
        f"{counts['fail']} failed, {counts['warn']} warning(s)" if any(counts.values())
        else "all checks passed"
    )
    return table(["", "check", "detail"], rows) + f"\n\n{verdict}."


def check_outbox(ctx: CommandContext) -> list[Check]:
    """The outbox opens, its schema is current (migrating it if needed) and it is writable."""
    settings = ctx.settings
    if settings.outbox == "memory":
        return [Check("outbox", "info", "memory outbox: nothing to check (tests only)")]
    try:
        counts = ctx.outbox().counts()
    except TrackLayerError as exc:
        return [Check("outbox", "fail", str(exc),
                      "fix the outbox setting or the file's permissions.")]
    total = sum(n for states in counts.values() for n in states.values())
    if settings.outbox.startswith("sqlite:///"):
        path = Path(settings.outbox[len("sqlite:///"):])
        if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            return [Check("outbox", "fail", f"{path} or its directory is not writable",
                          "SQLite needs to write the file and its -wal/-shm neighbours.")]
    return [Check("outbox", "ok", f"{settings.outbox}: schema current, writable, {total} rows")]


def run(ctx: CommandContext) -> int:
    """``tracklayer doctor [--probe] [--strict]``."""
    settings = ctx.settings
    checks = static_checks(settings)
    checks += check_outbox(ctx)
    if ctx.args.probe:
        from ..delivery.auth import auth_for

        try:
            auth = auth_for(settings)
        except ConfigurationError as exc:
            checks.append(Check("probe", "fail", "; ".join(exc.problems)))
        else:
            ctx.say(f"probing {settings.endpoint_url} with an empty conversions list ...")
            checks += probe_endpoint(settings, auth)
    else:
        checks += check_clock(None)
    ctx.emit([c.to_json() for c in checks], render(checks))
    return EXIT_PROBLEMS if has_problems(checks, strict=ctx.args.strict) else EXIT_OK
