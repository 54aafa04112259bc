"""Browser-side snippets: the Pixel twin of server conversions, and the landing reporter.

Both return a complete ``<script>`` element as a string that is safe to put in HTML as-is:
every value is JSON-encoded with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, so no field
(a conversion_id, a description, a path) can close the script or inject markup. Framework
helpers mark the result safe (``Markup``/``mark_safe``).

Consent for the landing reporter comes from the page: define ``window.tracklayerConsent`` as
an object ``{adStorage: "granted"|"denied", adUserData: ...}`` or a function returning one
(e.g. reading your CMP). Without it, no consent is sent and the server treats it as unknown.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

from .attribution import TWCLID_RE
from .conversion import SKIPPED_CONSENT, Conversion
from .settings import TrackLayerSettings

_JS_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}

_LANDING_JS = """(function () {
  var twclid = new URLSearchParams(window.location.search).get("twclid");
  if (!twclid || !new RegExp(%(pattern)s).test(twclid)) return;
  var body = {twclid: twclid, landingUrl: window.location.href};
  var hook = window.tracklayerConsent, consent = null;
  try { consent = typeof hook === "function" ? hook() : hook; } catch (e) { consent = null; }
  if (consent && typeof consent === "object") {
    body.consent = {adStorage: consent.adStorage, adUserData: consent.adUserData};
  }
  if (typeof fetch !== "function") return;
  fetch(%(path)s, {
    method: "POST",
    credentials: "same-origin",
    keepalive: true,
    headers: {"content-type": "application/json"},
    body: JSON.stringify(body)
  }).catch(function () {});
})();"""


def js_literal(value: Any) -> str:
    """``value`` as a JSON/JavaScript literal that cannot break out of a ``<script>``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_JS_ESCAPES)


def render_pixel_script(conversions: Iterable[Conversion], *, nonce: str | None = None) -> str:
    """``twq('event', 'tw-<pixel>-<event>', {..., conversion_id})`` for each conversion.

    Conversions skipped for consent are left out (the visitor said no to ad user data).
    The calls are skipped silently when the X Pixel base code (``twq``) is not on the page.
    Returns ``""`` when there is nothing to fire.
    """
    calls = [
        f"  twq('event', {js_literal(event['event_id'])}, {js_literal(event['params'])});"
        for event in (c.pixel_event() for c in conversions if c.initial_state != SKIPPED_CONSENT)
    ]
    if not calls:
        return ""
    body = "\n".join(["if (typeof window.twq === 'function') {", *calls, "}"])
    return _script(body, nonce)


def render_landing_script(settings: TrackLayerSettings, *, nonce: str | None = None) -> str:
    """The guide's landing snippet: POST the twclid, landing URL and consent to TrackLayer."""
    body = _LANDING_JS % {
        "pattern": js_literal(TWCLID_RE.pattern),
        "path": js_literal(settings.attribution_path),
    }
    return _script(body, nonce)


def _script(body: str, nonce: str | None) -> str:
    nonce_attr = f' nonce="{html.escape(nonce, quote=True)}"' if nonce else ""
    return f"<script{nonce_attr}>\n{body}\n</script>"
