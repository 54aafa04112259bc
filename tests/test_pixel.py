"""Pixel and landing scripts: exact calls (run in node when available) and no HTML breakout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from typing import Any

import pytest

from tracklayer_middleware.consent import Consent
from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.pixel import js_literal, render_landing_script, render_pixel_script
from tracklayer_middleware.settings import TrackLayerSettings

NOW = datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc)
EVIL = "</script><script>alert(1)</script>"
SETTINGS = TrackLayerSettings.from_mapping(
    {
        "pixelId": "o1a2b",
        "secretKey": "s" * 32,
        "xEventMap": {"purchase": {"eventId": "o87ni"}, "lead": "o87nf"},
    }
)
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")


def convert(event: str = "purchase", **fields: Any) -> Conversion:
    fields.setdefault("conversion_id", "ord_10492_purchase")
    fields.setdefault("email", "test@example.com")
    return build_conversion(SETTINGS, event, now=NOW, **fields)


def script_body(html_snippet: str) -> str:
    match = re.fullmatch(r"<script(?: nonce=\"[^\"]*\")?>\n(.*)\n</script>", html_snippet, re.S)
    assert match, html_snippet
    return match.group(1)


def assert_cannot_break_out(html_snippet: str) -> None:
    body = script_body(html_snippet)
    lowered = body.lower()
    assert "</script" not in lowered
    assert "<!--" not in lowered
    assert "<" not in body.replace("\\u003c", "")
    assert "\u2028" not in body and "\u2029" not in body


def run_node(setup: str, snippet: str, report: str) -> Any:
    program = f"{setup}\n{script_body(snippet)}\n{report}"
    result = subprocess.run(
        ["node", "-e", program], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(result.stdout)


# ---------------------------------------------------------------- pixel
def test_pixel_script_shape() -> None:
    snippet = render_pixel_script([convert(value=129.95, currency="USD")])
    assert snippet == (
        "<script>\n"
        "if (typeof window.twq === 'function') {\n"
        "  twq('event', \"tw-o1a2b-o87ni\", "
        '{"value":129.95,"currency":"USD","conversion_id":"ord_10492_purchase"});\n'
        "}\n"
        "</script>"
    )


def test_pixel_script_empty_and_consent_skipped() -> None:
    assert render_pixel_script([]) == ""
    denied = convert(consent=Consent(ad_user_data=False))
    assert render_pixel_script([denied]) == ""
    kept = convert(event="lead", conversion_id="lead_1", email=None)  # no identifier: still fire
    assert "lead_1" in render_pixel_script([denied, kept])


def test_pixel_script_escapes_hostile_fields() -> None:
    snippet = render_pixel_script(
        [convert(conversion_id=EVIL, description=EVIL + "\u2028&<!--")]
    )
    assert_cannot_break_out(snippet)
    assert "\\u003c/script\\u003e" in snippet


def test_nonce_is_an_escaped_attribute() -> None:
    snippet = render_pixel_script([convert()], nonce='abc"><x')
    assert snippet.startswith('<script nonce="abc&quot;&gt;&lt;x">')
    assert render_landing_script(SETTINGS, nonce="r4nd0m").startswith('<script nonce="r4nd0m">')


def test_js_literal_escapes() -> None:
    assert js_literal("<a>&\u2028\u2029é") == '"\\u003ca\\u003e\\u0026\\u2028\\u2029é"'


@needs_node
def test_pixel_script_calls_twq_with_the_same_conversion_id() -> None:
    conversions = [
        convert(value=129.95, currency="USD", conversion_id=EVIL),
        convert(event="lead", conversion_id="lead_1"),
    ]
    calls = run_node(
        "var calls = []; var window = globalThis;"
        "window.twq = function () { calls.push(Array.from(arguments)); };",
        render_pixel_script(conversions),
        "console.log(JSON.stringify(calls));",
    )
    assert calls == [
        ["event", "tw-o1a2b-o87ni", {"value": 129.95, "currency": "USD", "conversion_id": EVIL}],
        ["event", "tw-o1a2b-o87nf", {"conversion_id": "lead_1"}],
    ]


@needs_node
def test_pixel_script_is_quiet_without_the_pixel() -> None:
    result = run_node(
        "var window = globalThis;", render_pixel_script([convert()]), "console.log('true');"
    )
    assert result is True


# ---------------------------------------------------------------- landing
LANDING_SETUP = """
var window = globalThis, posted = [];
Object.defineProperty(globalThis, "location", {value: {search: SEARCH, href: HREF}});
globalThis.fetch = function (url, init) {
  posted.push({url: url, init: init, body: JSON.parse(init.body)});
  return Promise.resolve({status: 204});
};
"""


def run_landing(
    search: str, consent_hook: str = "", settings: TrackLayerSettings = SETTINGS
) -> list[dict[str, Any]]:
    href = "https://shop.example.com/pricing" + search
    setup = (
        LANDING_SETUP.replace("SEARCH", json.dumps(search)).replace("HREF", json.dumps(href))
        + consent_hook
    )
    result: list[dict[str, Any]] = run_node(
        setup, render_landing_script(settings), "console.log(JSON.stringify(posted));"
    )
    return result


@needs_node
def test_landing_posts_twclid_url_and_consent_same_origin() -> None:
    posted = run_landing(
        "?twclid=29q0w6g2k2m4a&utm_source=x",
        'window.tracklayerConsent = function () { return {adStorage: "granted", '
        'adUserData: "denied"}; };',
    )
    assert len(posted) == 1
    assert posted[0]["url"] == "/api/tracklayer/session-attribution"
    assert posted[0]["init"]["method"] == "POST"
    assert posted[0]["init"]["credentials"] == "same-origin"
    assert posted[0]["init"]["headers"] == {"content-type": "application/json"}
    assert posted[0]["body"] == {
        "twclid": "29q0w6g2k2m4a",
        "landingUrl": "https://shop.example.com/pricing?twclid=29q0w6g2k2m4a&utm_source=x",
        "consent": {"adStorage": "granted", "adUserData": "denied"},
    }


@needs_node
def test_landing_consent_object_partial_absent_or_broken() -> None:
    partial = run_landing("?twclid=abc", 'window.tracklayerConsent = {adStorage: "denied"};')
    assert partial[0]["body"]["consent"] == {"adStorage": "denied"}
    assert "consent" not in run_landing("?twclid=abc")[0]["body"]
    broken = run_landing("?twclid=abc", "window.tracklayerConsent = function () { throw 1; };")
    assert "consent" not in broken[0]["body"]


@needs_node
@pytest.mark.parametrize(
    "search", ["", "?utm_source=x", "?twclid=", "?twclid=a.b", "?twclid=%3Cx%3E"]
)
def test_landing_posts_nothing_without_a_valid_twclid(search: str) -> None:
    assert run_landing(search) == []


@needs_node
def test_landing_uses_the_configured_path() -> None:
    settings = SETTINGS.replace(attribution_path="/t/attr")
    assert run_landing("?twclid=abc", settings=settings)[0]["url"] == "/t/attr"


def test_landing_path_cannot_break_out() -> None:
    settings = SETTINGS.replace(attribution_path="/x" + EVIL)
    assert_cannot_break_out(render_landing_script(settings))
