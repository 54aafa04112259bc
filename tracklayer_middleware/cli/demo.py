"""``tracklayer demo``: the guide's whole story in one command, with no X account.

Starts the demo shop (``demo_app``) behind ``TrackLayerMiddleware`` and the bundled fake X
(``FakeXConversionsAPI``) on 127.0.0.1, then walks a visitor through it with httpx: ad click
landing → signed attribution cookie → lead → purchase → Pixel twin with the same
conversion_id → delivery after the response → one injected X 503 and a retry → accepted.
Each step prints what was stored and sent (hashes shortened, token never shown), and the
run ends with ``status`` and the ``trace`` of the purchase.

The demo is a real, sending configuration (environment ``production``, no dry-run) whose
``api_base_url`` points at the fake X; its outbox is a temporary SQLite file and its token a
random value set in this process only. ``--serve`` then keeps the shop and a status page up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ..delivery.report import Trace
from ..engine import TrackLayer
from ..settings import TrackLayerSettings
from ..testing import FakeResponse, FakeXConversionsAPI, RecordedRequest
from .demo_app import build_demo_app
from .output import EXIT_OK, EXIT_PROBLEMS, secret_presence, shorten_hash
from .status import collect_status, render_status
from .trace import payload_as_sent, render_payload

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .context import CommandContext

DEMO_TOKEN_ENV = "DEMO_X_ADS_BEARER_TOKEN"
PIXEL_ID = "o1a2b"
TWCLID = "29q0w6g2k2m4a"
SHOP = "http://shop.test"
LANDING = f"/pricing?twclid={TWCLID}&utm_source=x&utm_campaign=spring&gclid=other-network"
# What the visitor types; only its SHA-256 may ever be printed or stored.
VISITOR_EMAIL = "  Jane.Doe@Example.COM "
ORDER_ID = "10492"
PURCHASE_ID = f"ord_{ORDER_ID}_purchase"
LEAD_ID = "lead_web1"
# The guide's xEventMap.
EVENT_MAP = {
    "page_view": {"eventId": "o87ne", "label": "PageView"},
    "lead": {"eventId": "o87nf", "label": "Lead"},
    "sign_up": {"eventId": "o87ng", "label": "SignUp"},
    "begin_checkout": {"eventId": "o87nh", "label": "StartCheckout"},
    "purchase": {"eventId": "o87ni", "label": "Purchase"},
}
WAIT_SECONDS = 15.0
_STEPS = 7


def demo_settings(workdir: Path, fake_x_url: str) -> TrackLayerSettings:
    """A sending configuration aimed at the fake X, with quick retries so the 503 is brief."""
    return TrackLayerSettings.from_mapping({
        "pixelId": PIXEL_ID,
        "apiVersion": "12",
        "tokenSecretName": DEMO_TOKEN_ENV,
        "allowedEnvironments": ["production"],
        "environment": "production",
        "api_base_url": fake_x_url,
        "secret_key": secrets.token_urlsafe(32),
        "xEventMap": EVENT_MAP,
        "outbox": f"sqlite:///{workdir / 'outbox.sqlite3'}",
        "retry_base_seconds": 0.3,
        "retry_max_seconds": 0.6,
        "shutdown_timeout": 2.0,
    })


class Story:
    """Prints the steps (or collects them for ``--json``) and checks each one worked."""

    def __init__(self, ctx: CommandContext, engine: TrackLayer, fake: FakeXConversionsAPI):
        self.ctx = ctx
        self.engine = engine
        self.fake = fake
        self.steps: list[dict[str, Any]] = []
        self.requests_before_purchase = 0
        self.problems: list[str] = []
        self._step = 0

    # ------------------------------------------------------------------ printing
    def step(self, title: str) -> None:
        self._step += 1
        self.steps.append({"step": self._step, "title": title, "facts": {}})
        self.ctx.say(f"\n[{self._step}/{_STEPS}] {title}")

    def fact(self, label: str, value: object, *, shown: str | None = None) -> None:
        self.steps[-1]["facts"][label] = value
        self.ctx.say(f"      {label:<14}{value if shown is None else shown}")

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)
            self.ctx.say(f"      !! {problem}")

    # ------------------------------------------------------------------ the story
    async def run(self, app: ASGIApp) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=SHOP) as client:
            await self.landing(client)
            await self.consent_report(client)
            await self.lead(client)
            await self.purchase(client)
        await anyio.to_thread.run_sync(self.delivery)

    async def landing(self, client: httpx.AsyncClient) -> None:
        self.step("An X ad click lands on the shop")
        response = await client.get(LANDING)
        self.fact("request", f"GET {LANDING}")
        self.fact("response", response.status_code)
        self._show_cookie(response, "stored")

    def _show_cookie(self, response: httpx.Response, label: str) -> None:
        name = self.engine.settings.cookie_name
        header = next((h for h in response.headers.get_list("set-cookie")
                       if h.startswith(f"{name}=")), None)
        self.check(header is not None, "no attribution cookie was set")
        if header is None:
            return
        value = header.split(";", 1)[0].split("=", 1)[1].strip('"')
        flags = header.split(";", 1)[1].strip() if ";" in header else ""
        self.fact("Set-Cookie", f"{name}=<signed, {len(value)} bytes>; {flags}")
        click = self.engine.codec.loads_cookie(value)
        self.check(click is not None, "the cookie did not verify")
        if click is None:
            return
        consent = ", ".join(f"{k}={v}" for k, v in click.consent.to_json().items())
        consent = consent or "unknown (the page has not said yet)"
        self.fact(label, {
            "twclid": click.twclid,
            "landing_url": click.landing_url,
            "captured_at": click.captured_at.isoformat(timespec="seconds"),
            "consent": click.consent.to_json(),
            "attribution_id": click.attribution_id,
        }, shown=(
            f"twclid={click.twclid}\n{'':20}landing_url={click.landing_url}  (gclid dropped: "
            f"only scheme, host, path and utm_* are kept)\n{'':20}captured_at="
            f"{click.captured_at.isoformat(timespec='seconds')}\n{'':20}consent={consent}\n"
            f"{'':20}attribution_id={click.attribution_id}  (the guide's session id, no PII)"
        ))

    async def consent_report(self, client: httpx.AsyncClient) -> None:
        path = self.engine.settings.attribution_path
        self.step(f"The page's landing script reports consent: POST {path}")
        body = {"twclid": TWCLID, "landingUrl": SHOP + LANDING,
                "consent": {"adStorage": "granted", "adUserData": "granted"}}
        response = await client.post(path, json=body, headers={"origin": SHOP})
        self.fact("body", json.dumps(body["consent"]))
        self.fact("response", response.status_code, shown=f"{response.status_code} "
                  "(answered by the middleware itself; the shop wrote no view for it)")
        self.check(response.status_code == 204, f"expected 204, got {response.status_code}")
        self._show_cookie(response, "now stored")

    async def lead(self, client: httpx.AsyncClient) -> None:
        self.step("Lead: the visitor requests a demo (POST /demo-request)")
        self.fact("view calls", f'request.state.tracker.convert("lead", '
                  f'conversion_id="{LEAD_ID}", email=<typed by the visitor>)')
        response = await client.post("/demo-request",
                                     data={"email": VISITOR_EMAIL, "lead_id": "web1"})
        self.fact("response", response.status_code, shown=f"{response.status_code}, sent "
                  "before anything talks to X")
        self._show_stored(LEAD_ID)
        answered = await anyio.to_thread.run_sync(self.fake.wait_for_requests, 1, WAIT_SECONDS)
        self.check(answered, "the lead did not reach the fake X")
        if answered:
            self._show_request(self.fake.requests[0], "after the response")

    async def purchase(self, client: httpx.AsyncClient) -> None:
        self.step("Purchase: the order is paid (POST /checkout), backend truth converts it")
        self.fact("view calls", f'convert("purchase", conversion_id="{PURCHASE_ID}", '
                  f'value=129.95, currency="USD", email=<typed>, external_id="cust_{ORDER_ID}")')
        # The next request to X fails once, as X sometimes does. (The sender may answer
        # before the shop's response reaches the client: count requests from here.)
        self.requests_before_purchase = len(self.fake.requests)
        self.fake.script(FakeResponse(503))
        response = await client.post("/checkout",
                                     data={"email": VISITOR_EMAIL, "order_id": ORDER_ID})
        self.fact("response", response.status_code)
        self._show_stored(PURCHASE_ID)

        self.step("Pixel twin in the order page: the browser fires the same conversion_id")
        match = re.search(r"twq\('event', (.+?), (\{.+?\})\);", response.text)
        self.check(match is not None, "the order page has no twq() call")
        if match:
            params = json.loads(match.group(2))
            self.fact("browser", f"twq('event', {match.group(1)}, {match.group(2)})")
            self.check(params.get("conversion_id") == PURCHASE_ID,
                       "the Pixel conversion_id differs from the server's")
            self.fact("dedup", "X sees one purchase: Pixel and API share conversion_id "
                      f"{PURCHASE_ID}")

    def _show_stored(self, conversion_id: str) -> None:
        rows = self.engine.outbox.rows(conversion_id)
        self.check(bool(rows), f"{conversion_id} is not in the outbox")
        if not rows:
            return
        record = rows[-1].record
        ids = {name: record[name] if name == "twclid" else shorten_hash(record[name])
               for name in ("twclid", "hashed_email", "hashed_phone") if record.get(name)}
        self.fact("outbox row", {"conversion_id": conversion_id, "event_id": rows[-1].event_id,
                                 "state": rows[-1].state, "identifiers": ids},
                  shown=f"{conversion_id} (X event {rows[-1].event_id}), state "
                  f"{rows[-1].state}, identifiers "
                  + ", ".join(f"{k}={v}" for k, v in ids.items())
                  + "  (email trimmed, lowercased, SHA-256 on the server)")

    def _show_request(self, request: RecordedRequest, when: str) -> None:
        body = request.json() if request.body else {}
        conversions = body.get("conversions", []) if isinstance(body, dict) else []
        ids = ", ".join(str(c.get("conversion_id")) for c in conversions)
        self.fact("X got", f"POST {request.path} {when}: [{ids}] → HTTP {request.status}",)

    def delivery(self) -> None:
        self.step("After the response: the sender delivers the purchase; X fails once")
        seen = self.requests_before_purchase
        for attempt in (1, 2):
            arrived = self.fake.wait_for_requests(seen + attempt, WAIT_SECONDS)
            self.check(arrived, f"attempt {attempt} never reached the fake X")
            if not arrived:
                return
            request = self.fake.requests[seen + attempt - 1]
            self._show_request(request, f"attempt {attempt}")
            if request.status == 503:
                self.ctx.say(f"{'':20}→ X said 503: retrying with backoff and the SAME "
                             "conversion_id (no double count possible)")
        self.check(self.engine.flush(WAIT_SECONDS), "the outbox did not drain")
        last = self.fake.requests[-1]
        sent = [_shortened(c) for c in last.conversions()]
        self.fact("X got body", {"conversions": sent},
                  shown=json.dumps({"conversions": sent}, ensure_ascii=False))
        header = {"bearer": "Authorization: Bearer", "pixel_token": "X-Pixel-Token:"}.get(
            last.auth_scheme or "", "(no auth header?)")
        self.fact("auth header", f"{header} ****  (token from "
                  f"${DEMO_TOKEN_ENV}: {secret_presence(os.environ.get(DEMO_TOKEN_ENV))}, "
                  "never printed)")
        accepted = self.fake.accepted_ids()
        self.fact("X accepted", dict(accepted), shown=", ".join(
            f"{cid} (x{n})" for cid, n in accepted.items()))
        self.check(accepted.get(PURCHASE_ID) == 1, "the purchase was not accepted exactly once")

    def finale(self) -> dict[str, Any]:
        self.step("Where things stand: `tracklayer status` and `tracklayer trace`")
        status = collect_status(self.engine.outbox, self.engine.settings)
        rows = self.engine.outbox.rows(PURCHASE_ID)
        trace = Trace.from_outbox(rows[-1], self.engine.outbox.attempts(PURCHASE_ID))
        payload = payload_as_sent(rows[-1], self.engine.settings)
        self.ctx.say("\n" + render_status(status))
        self.ctx.say(f"\n$ tracklayer trace {PURCHASE_ID}\n{trace}\n{render_payload(payload)}")
        return {"status": status, "trace": {**trace.to_dict(), "payload": payload}}


def _shortened(conversion: dict[str, Any]) -> dict[str, Any]:
    """One conversion of a request body with its hashed identifiers shortened."""
    identifiers = [
        {k: shorten_hash(v) if k.startswith("hashed_") else v for k, v in item.items()}
        for item in conversion.get("identifiers", ())
    ]
    return {**conversion, "identifiers": identifiers}


@contextlib.contextmanager
def demo_environment() -> Iterator[tuple[Path, str]]:
    """A temp directory and a random demo token in this process's env (both undone after)."""
    token = secrets.token_urlsafe(24)
    previous = os.environ.get(DEMO_TOKEN_ENV)
    os.environ[DEMO_TOKEN_ENV] = token
    # The delivery log's WARNING for the scripted 503 would interleave with the story.
    quiet = logging.NullHandler()
    tracklayer_logger = logging.getLogger("tracklayer")
    tracklayer_logger.addHandler(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="tracklayer-demo-") as workdir:
            yield Path(workdir), token
    finally:
        tracklayer_logger.removeHandler(quiet)
        if previous is None:
            os.environ.pop(DEMO_TOKEN_ENV, None)
        else:
            os.environ[DEMO_TOKEN_ENV] = previous


def run(ctx: CommandContext) -> int:
    """``tracklayer demo [--serve] [--port N]``; exit 1 if any step did not work."""
    with demo_environment() as (workdir, token), FakeXConversionsAPI(
        pixel_ids=[PIXEL_ID], token=token
    ) as fake:
        settings = demo_settings(workdir, fake.base_url)
        engine = TrackLayer(settings)
        try:
            app = build_demo_app(engine)
            ctx.say("TrackLayer demo: the guide's story against a local fake X "
                    "(no X account, no traffic beyond 127.0.0.1)")
            ctx.say(f"      {'fake X':<14}{settings.endpoint_url}")
            ctx.say(f"      {'outbox':<14}{settings.outbox} (temporary)")
            ctx.say(f"      {'token':<14}${DEMO_TOKEN_ENV}: {secret_presence(token)}")
            ctx.say(f"      {'environment':<14}production: a real send (no dry-run), "
                    "aimed at the fake X")
            story = Story(ctx, engine, fake)
            anyio.run(story.run, app)
            summary = story.finale()
            ok = not story.problems
            ctx.say("\nEvery step worked." if ok else f"\n{len(story.problems)} step(s) failed.")
            if ctx.as_json:
                ctx.emit({"ok": ok, "problems": story.problems, "steps": story.steps,
                          **summary}, "")
            if ctx.args.serve and ok:
                return serve(ctx, app, fake)
            return EXIT_OK if ok else EXIT_PROBLEMS
        finally:
            engine.close(2)


def serve(ctx: CommandContext, app: ASGIApp, fake: FakeXConversionsAPI) -> int:
    """Keep the shop (and its /status page) up on 127.0.0.1 until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:
        ctx.err.write("--serve needs uvicorn: pip install uvicorn\n")
        return EXIT_PROBLEMS
    port = ctx.args.port
    base = f"http://127.0.0.1:{port}"
    ctx.say(f"\nServing the demo shop at {base}/ (fake X at {fake.base_url}); Ctrl-C stops.")
    ctx.say(f"  land from an ad:  {base}{LANDING}")
    ctx.say(f"  delivery status:  {base}/status")
    # X answers normally from now on; the shop keeps using the same outbox and fake X.
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()
    return EXIT_OK
