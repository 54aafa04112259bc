"""Leak scanner: the whole story with a known token, email and phone, then every sink read.

Sinks: every log record at every level (root and the ``tracklayer`` tree, DEBUG included),
every Set-Cookie and response body, every outbox row and the raw bytes of the SQLite files,
every exception text, the repr/str of the public objects, and the CLI's output. None may
hold the token or the raw email/phone; the SHA-256 hashes may appear only in the outbox's
conversion record and in the HTTP body sent to X. The scanner proves it can see: the token
IS found in the Authorization header X received, the hashes ARE found in X's body.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import SECRET_KEY, TOKEN, Shop, attribution_cookie
from tests.adversarial.summary import LEAKS
from tracklayer_middleware.cli import main as cli_main
from tracklayer_middleware.delivery.client import XConversionsClient
from tracklayer_middleware.errors import TrackLayerError
from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = pytest.mark.adversarial_leak

EMAIL = "  Leak.Probe+Adversarial@Example.COM "
PHONE = "+1 415 555 0199"
RAW = {
    "email": EMAIL.strip(),
    "email (normalized)": EMAIL.strip().lower(),
    "email (local part)": "leak.probe+adversarial",
    "phone": PHONE,
    "phone (digits)": "4155550199",
    "token": TOKEN,
    "cookie signing key": SECRET_KEY,
}
HASHES = {
    "hashed email": hashlib.sha256(EMAIL.strip().lower().encode()).hexdigest(),
    "hashed phone": hashlib.sha256(b"+14155550199").hexdigest(),
}
# Where hashes may live: the conversion record in the outbox, and the body posted to X.
HASH_SINKS = ("outbox.record", "x.body")


@dataclass
class Sinks:
    """Every text the story produced, by sink name."""

    texts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, sink: str, value: Any) -> None:
        text = value if isinstance(value, str) else (
            value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)
        )
        self.texts.setdefault(sink, []).append(text)

    def find(self, needle: str) -> Iterator[str]:
        for sink, _ in self.hits(needle):
            yield sink

    def hits(self, needle: str) -> Iterator[tuple[str, str]]:
        """(sink, the text around the first hit) for each sink holding ``needle``."""
        for sink, texts in self.texts.items():
            for text in texts:
                at = text.lower().find(needle.lower())
                if at >= 0:
                    yield sink, text[max(0, at - 60): at + len(needle) + 20]
                    break


def decode_signed(value: str) -> str:
    """The payload of an itsdangerous value, decoded without checking the signature."""
    import zlib

    from itsdangerous.encoding import base64_decode

    compressed = value.startswith(".")
    payload = base64_decode(value.lstrip(".").split(".")[0])
    return (zlib.decompress(payload) if compressed else payload).decode("utf-8", "replace")


def run_story(shop: Shop, xapi: FakeXConversionsAPI, caplog: pytest.LogCaptureFixture,
              capsys: pytest.CaptureFixture[str]) -> Sinks:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tracklayer")
    engine = shop.engine
    sinks = Sinks()

    def answer(name: str, response: Any) -> None:
        sinks.add(f"{name}.set-cookie", response.headers.get_list("set-cookie"))
        sinks.add(f"{name}.body", response.content)
        value = attribution_cookie(response)
        if value:  # the signed payload is base64: scan it decoded, as a thief would read it
            sinks.add(f"{name}.set-cookie", decode_signed(value))

    # 1. Landing from an ad, with PII some sites put in links.
    landing = shop.get(f"/pricing?twclid=leakclick1&utm_source=x&email={RAW['email']}"
                       f"&phone={RAW['phone (digits)']}")
    answer("landing", landing)
    cookie = attribution_cookie(landing)
    assert cookie is not None
    decoded = engine.codec.loads_cookie(cookie)
    sinks.add("cookie.decoded", decoded)
    # 2. The browser's report, with credentials and PII in the landing URL.
    report = shop.report({"twclid": "leakclick1", "consent": {"adStorage": "granted",
                          "adUserData": "granted"},
                          "landingUrl": f"https://user:{TOKEN}@shop.test/p?utm_source=x"
                                        f"&email={RAW['email']}"})
    answer("report", report)
    # 3. The checkout converts with email and phone (the cookie carries the click).
    checkout = shop.post("/checkout", json={"conversion_id": "leak_ord_1", "value": 129.95,
                                            "currency": "USD", "email": EMAIL, "phone": PHONE,
                                            "external_id": "cust_leak"},
                         headers={"cookie": f"tl_attr={cookie}"})
    answer("checkout", checkout)
    # 4. Out of a request: a job converts with the attribution token.
    token = engine.tracker(attribution=decoded).attribution_token
    assert token is not None
    sinks.add("attribution-token", decode_signed(token))
    conversion = engine.convert("lead", conversion_id="leak_lead_1", attribution=token,
                                email=EMAIL, phone=PHONE)
    sinks.add("repr", conversion)
    sinks.add("repr", str(conversion))
    sinks.add("repr", conversion.pixel_event())
    # 5. Refusals: their messages must not echo what they refuse.
    for bad in ({"email": RAW["email"] + " x"}, {"phone": PHONE + "x"},
                {"email": RAW["email"], "value": -1}):
        with pytest.raises(TrackLayerError) as caught:
            engine.convert("purchase", conversion_id="leak_bad", attribution="leakclick1", **bad)
        sinks.add("exception", str(caught.value))
        sinks.add("exception", repr(caught.value))
    for broken in ({"pixel_id": ""}, {"secret_key_fallbacks": ("",)}, {"batch_size": 0}):
        with pytest.raises(TrackLayerError) as caught:
            engine.settings.replace(**broken)
        sinks.add("exception", str(caught.value))
    # 6. X refuses the token once (AUTH_FAILED path logs the guide's fix), then accepts.
    xapi.script(401)
    assert engine.flush(timeout=30)  # paused rows do not hold flush()
    out = io.StringIO()
    assert cli_main(["resume"], engine=engine, stdout=out, stderr=out) == 0  # token "rotated"
    sinks.add("cli", out.getvalue())
    assert engine.flush(timeout=30)
    assert xapi.wait_for(2, timeout=30), engine.stats()
    # 7. Reports, reprs and the CLI.
    sinks.add("stats", engine.stats())
    for cid in ("leak_ord_1", "leak_lead_1"):
        trace = engine.trace(cid)
        assert trace is not None
        sinks.add("trace", str(trace))
        sinks.add("trace", repr(trace))
        sinks.add("trace", json.dumps(trace.to_dict(), default=str))
    with XConversionsClient(engine.settings) as client:
        public = [engine.settings, engine, engine.codec, engine.outbox, engine.sender,
                  shop.app, client, engine.tracker(attribution=decoded), decoded, *xapi.requests]
        for obj in public:
            sinks.add("repr", repr(obj))
            sinks.add("repr", str(obj))
    for argv in (["status"], ["status", "--json"], ["trace", "leak_ord_1"],
                 ["trace", "leak_ord_1", "--json"], ["report"], ["doctor"]):
        out, err = io.StringIO(), io.StringIO()
        cli_main(argv, engine=engine, stdout=out, stderr=err)
        sinks.add("cli", out.getvalue() + err.getvalue())
    sinks.add("cli", capsys.readouterr())
    # 8. Logs, every record, message and extras.
    for record in caplog.records:
        if record.name == "httpx" and "://shop.test/" in record.getMessage():
            continue  # the test's own client (the visitor's browser) logging its URL
        sinks.add("log", record.getMessage())
        sinks.add("log.loggers", record.name)
        sinks.add("log", {k: v for k, v in vars(record).items() if k not in ("msg", "args")})
        if record.exc_info:
            sinks.add("log", logging.Formatter().formatException(record.exc_info))
    # 9. The outbox: every table, every row; the conversion record kept apart. Raw bytes too.
    path = Path(engine.settings.outbox.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            for row in cursor:
                for name, value in zip(names, row, strict=True):
                    sink = "outbox.record" if (table, name) == ("outbox", "record") else \
                        f"outbox.{table}.{name}"
                    sinks.add(sink, "" if value is None else value)
    for file in path.parent.glob(path.name + "*"):
        sinks.add("outbox.file-bytes", file.read_bytes())
    # 10. What X received (the positive controls).
    for request in xapi.requests:
        sinks.add("x.body", request.body)
        sinks.add("x.auth-header", request.headers.get("authorization", ""))
    return sinks


@pytest.fixture
def story(shop: Shop, xapi: FakeXConversionsAPI, caplog: pytest.LogCaptureFixture,
          capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Iterator[Sinks]:
    leaks: list[tuple[str, str]] = []
    sinks = run_story(shop, xapi, caplog, capsys)
    sinks.leaks = leaks  # type: ignore[attr-defined]
    yield sinks
    request.node.user_properties.append((LEAKS, len(leaks)))


def leaked(sinks: Sinks, needles: dict[str, str], allowed: tuple[str, ...] = ()) -> list[str]:
    found = [f"{what} in {sink}: {context!r}" for what, needle in needles.items()
             for sink, context in sinks.hits(needle) if sink not in allowed]
    sinks.leaks.extend(found)  # type: ignore[attr-defined]
    return found


def test_scanner_sees_the_token_and_hashes_where_they_belong(story: Sinks) -> None:
    assert "leakclick1" in " ".join(story.texts["landing.set-cookie"])  # decoded payload
    assert "x.auth-header" in set(story.find(TOKEN))
    for needle in HASHES.values():
        assert "x.body" in set(story.find(needle))
        assert "outbox.record" in set(story.find(needle))
    assert len(story.texts["log"]) > 10 and story.texts["cli"]
    loggers = set(story.texts["log.loggers"])
    assert {"tracklayer.delivery", "tracklayer.delivery.sender"} <= loggers, loggers


def test_no_token_anywhere_but_the_auth_header(story: Sinks) -> None:
    assert leaked(story, {"token": TOKEN}, allowed=("x.auth-header",)) == []


def test_no_raw_email_or_phone_anywhere(story: Sinks) -> None:
    raw = {k: v for k, v in RAW.items() if k not in ("token", "cookie signing key")}
    assert leaked(story, raw) == []


def test_no_cookie_signing_key_anywhere(story: Sinks) -> None:
    assert leaked(story, {"cookie signing key": SECRET_KEY}) == []


def test_hashes_only_in_the_outbox_record_and_the_body_to_x(story: Sinks) -> None:
    allowed = (*HASH_SINKS, "outbox.file-bytes")  # the file holds the record column
    assert leaked(story, HASHES, allowed=allowed) == []


def test_no_pii_in_cookies_and_browser_answers(story: Sinks) -> None:
    browser = {sink: texts for sink, texts in story.texts.items()
               if sink.endswith((".set-cookie", ".body")) and not sink.startswith("x.")}
    needles = {**RAW, **HASHES}
    found = [f"{what} in {sink}" for sink, texts in browser.items()
             for what, needle in needles.items() if any(needle.lower() in t.lower()
                                                        for t in texts)]
    story.leaks.extend(found)  # type: ignore[attr-defined]
    assert found == []
