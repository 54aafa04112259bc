"""Harness of the adversarial suite: known secrets, an observer for bad inputs, a ledger for faults.

Every case is one test marked ``adversarial_input``, ``adversarial_fault`` or
``adversarial_leak``; the fixtures here record what the case saw (5xx answers and crashes,
lost and doubled conversion ids, leaks) into the test report, and ``summary.py`` adds them
up into the line printed at the end of ``make test``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.adversarial.summary import DOUBLED, LOST, SERVER_ERRORS
from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.errors import TrackLayerError
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing import FakeXConversionsAPI

T = TypeVar("T")

# Sentinels the leak scanner hunts for; nothing but the fake X may ever see TOKEN.
TOKEN = "XTOKEN-adversarial-SENTINEL-7f3a9c51"
TOKEN_ENV = "TL_ADVERSARIAL_TOKEN"
SECRET_KEY = "adversarial-suite-signing-key-2026"
OLD_SECRET_KEY = "adversarial-suite-retired-key-2025"
PIXEL_ID = "o1a2b"
EVENTS: Mapping[str, Any] = {
    "purchase": {"eventId": "o87ni", "label": "Purchase"},
    "lead": {"eventId": "o87nf", "label": "Lead"},
}


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A valid production config whose outbox lives under ``tmp_path``; overrides win."""
    config: dict[str, Any] = {
        "pixelId": PIXEL_ID,
        "secret_key": SECRET_KEY,
        "xEventMap": dict(EVENTS),
        "environment": "production",
        "token_env": TOKEN_ENV,
        "outbox": f"sqlite:///{tmp_path / 'outbox.sqlite3'}",
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "timeout_seconds": 2.0,
        "lease_seconds": 10.0,
        "shutdown_timeout": 2.0,
    }
    config.update(overrides)
    return config


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The X token, set in the environment the way production sets it."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


@pytest.fixture
def make_settings(tmp_path: Path, token_env: str) -> Callable[..., TrackLayerSettings]:
    """Build validated settings from ``base_config`` plus overrides."""

    def make(**overrides: Any) -> TrackLayerSettings:
        return TrackLayerSettings.from_mapping(base_config(tmp_path, **overrides))

    return make


class Observed:
    """What a bad-input case provoked: 5xx answers and crashes (non-TrackLayerError raises)."""

    def __init__(self) -> None:
        self.server_errors = 0
        self.statuses: list[int] = []

    def status(self, code: int) -> int:
        self.statuses.append(code)
        if code >= 500:
            self.server_errors += 1
        return code

    def calls(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | TrackLayerError:
        """Run ``fn``: a ``TrackLayerError`` comes back (a clean refusal); anything else crashes."""
        try:
            return fn(*args, **kwargs)
        except TrackLayerError as exc:
            return exc
        except Exception:
            self.server_errors += 1
            raise


@pytest.fixture
def observed(request: pytest.FixtureRequest) -> Iterator[Observed]:
    seen = Observed()
    yield seen
    request.node.user_properties.append((SERVER_ERRORS, seen.server_errors))


class Ledger:
    """Accounts for every conversion id of a fault case: 0 lost, 0 doubled by our side."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def account(
        self,
        expected: Iterable[str],
        delivered: Iterable[str],
        *,
        resend_allowed: Iterable[str] = (),
    ) -> None:
        """``delivered``: conversion ids X accepted, one entry per acceptance.

        An id accepted twice is doubled unless it is in ``resend_allowed`` (an ambiguous
        failure where resending the SAME conversion_id is the correct, X-deduplicated move);
        an id we never created is doubled too (a second id minted for one action).
        """
        want = set(expected)
        got = Counter(delivered)
        may_repeat = set(resend_allowed)
        lost = sorted(want - set(got))
        doubled = sorted(
            cid for cid, n in got.items() if cid not in want or (n > 1 and cid not in may_repeat)
        )
        self._node.user_properties.append((LOST, len(lost)))
        self._node.user_properties.append((DOUBLED, len(doubled)))
        assert not lost, f"lost conversion ids: {lost[:10]} (of {len(lost)})"
        assert not doubled, f"doubled conversion ids: {doubled[:10]} (of {len(doubled)})"


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    return Ledger(request.node)


# --------------------------------------------------------------------------- fake X, engine
@pytest.fixture
def xapi(token_env: str) -> Iterator[FakeXConversionsAPI]:
    """The fake X on 127.0.0.1, expecting ``TOKEN`` as Bearer."""
    with FakeXConversionsAPI(pixel_ids=[PIXEL_ID], token=token_env) as fake:
        yield fake


@pytest.fixture
def make_engine(
    make_settings: Callable[..., TrackLayerSettings], xapi: FakeXConversionsAPI
) -> Iterator[Callable[..., TrackLayer]]:
    """Engines talking to the fake X (overrides go to the settings); closed at teardown."""
    engines: list[TrackLayer] = []

    def make(**overrides: Any) -> TrackLayer:
        overrides.setdefault("api_base_url", xapi.base_url)
        engine = TrackLayer(make_settings(**overrides))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close(timeout=2)


@pytest.fixture
def engine(make_engine: Callable[..., TrackLayer]) -> TrackLayer:
    return make_engine()


# --------------------------------------------------------------------------- the shop
async def _whoami(request: Request) -> Response:
    tracker = request.state.tracker
    click = tracker.attribution
    return JSONResponse(
        {
            "twclid": click.twclid if click else None,
            "landing_url": click.landing_url if click else None,
        }
    )


async def _checkout(request: Request) -> Response:
    data = await request.json()
    conversion = request.state.tracker.convert("purchase", **data)
    return JSONResponse(conversion.pixel_event())


async def _checkout_then_crash(request: Request) -> Response:
    data = await request.json()
    request.state.tracker.convert("purchase", **data)
    raise RuntimeError("the order could not be saved after all")


async def _stream(request: Request) -> Response:
    request.state.tracker.convert(
        "purchase", conversion_id=request.query_params["cid"], email="stream@example.com"
    )

    async def chunks() -> Any:
        for i in range(1000):
            yield f"line {i}\n".encode()
            await anyio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


async def _checkout_then_503(request: Request) -> Response:
    data = await request.json()
    request.state.tracker.convert("purchase", **data)
    return PlainTextResponse("payment provider down", status_code=503)


async def _stream_then_fail(request: Request) -> Response:
    data = await request.json()
    request.state.tracker.convert("purchase", **data)

    async def chunks() -> Any:
        yield b"receipt part one\n"
        raise RuntimeError("the template blew up half-way")

    return StreamingResponse(chunks(), media_type="text/plain")


def shop_app() -> Starlette:
    """A small shop: landing pages, a checkout that converts, ones that fail, streams."""
    return Starlette(
        routes=[
            Route("/pricing", lambda r: PlainTextResponse("pricing")),
            Route("/whoami", _whoami),
            Route("/checkout", _checkout, methods=["POST"]),
            Route("/checkout-then-crash", _checkout_then_crash, methods=["POST"]),
            Route("/stream", _stream),
            Route("/checkout-then-503", _checkout_then_503, methods=["POST"]),
            Route("/stream-then-fail", _stream_then_fail, methods=["POST"]),
        ]
    )


class Shop:
    """The shop behind ``TrackLayerMiddleware``, driven through ``httpx.ASGITransport``.

    Every answer's status goes to ``observed`` (so a 5xx is counted); ``raise_app_exceptions``
    is off so an exception escaping the middleware is seen as the 500 a server would send.
    """

    def __init__(self, engine: TrackLayer, observed: Observed) -> None:
        self.engine = engine
        self.app = TrackLayerMiddleware(shop_app(), engine)
        self.observed = observed
        self.base_url = "http://shop.test"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url=self.base_url, **kwargs)

    async def arequest(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async with self.client() as client:
            response = await client.request(method, url, **kwargs)
        self.observed.status(response.status_code)
        return response

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return anyio.run(lambda: self.arequest(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def report(self, body: Any = None, *, origin: str | None = "http://shop.test",
               **kwargs: Any) -> httpx.Response:
        """POST to the attribution endpoint (same-origin by default)."""
        headers = dict(kwargs.pop("headers", {}))
        if origin is not None:
            headers.setdefault("origin", origin)
        if body is not None:
            kwargs["json"] = body
        return self.post(self.engine.settings.attribution_path, headers=headers, **kwargs)


@pytest.fixture
def shop(engine: TrackLayer, observed: Observed) -> Shop:
    return Shop(engine, observed)


def attribution_cookie(response: httpx.Response) -> str | None:
    """The value of the attribution cookie a response sets (None when it sets none)."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() in ("tl_attr", "__Host-tl_attr"):
            return rest.partition(";")[0]
    return None


def asgi_call(
    app: Any,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    client: tuple[str, int] = ("203.0.113.7", 51000),
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """One request as raw ASGI (hostile bytes reach the app unfiltered by a client library);
    returns (status, response headers)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "headers": headers or [(b"host", b"shop.test")], "client": client,
        "server": ("shop.test", 80),
    }
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], list(start.get("headers", []))


def wait_until(engine: TrackLayer, done: Callable[[], bool], timeout: float = 10) -> None:
    """Wait on the sender's progress signal (short waits, not a sleep) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, engine.stats()
        with engine.sender.progress:
            engine.sender.progress.wait(0.01)
