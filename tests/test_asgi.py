"""TrackLayerMiddleware over real HTTP (httpx.ASGITransport) in front of a Starlette app."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.attribution import Attribution
from tracklayer_middleware.consent import Consent
from tracklayer_middleware.tracker import current_tracker

pytestmark = pytest.mark.anyio

# sha256("test@example.com"), the vector of x-conversions-api.md
TEST_EMAIL_SHA256 = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
LANDING = "/pricing?twclid=29q0w6g2k2m4a&utm_source=x&email=a%40b.c"


def convert(request: Request, conversion_id: str = "ord_10492_purchase") -> None:
    request.state.tracker.convert(
        "purchase",
        conversion_id=conversion_id,
        value=129.95,
        currency="USD",
        email="Jane.Doe@Example.com ",
    )


async def home(request: Request) -> Response:
    tracker = request.state.tracker
    attribution = tracker.attribution
    return JSONResponse(
        {
            "twclid": attribution.twclid if attribution else None,
            "landing_url": attribution.landing_url if attribution else None,
            "consent": tracker.consent.to_json(),
            "token": tracker.attribution_token,
            "same": tracker is request.scope["tracklayer.tracker"] is current_tracker(),
        }
    )


async def buy(request: Request) -> Response:
    convert(request)
    return PlainTextResponse("thanks")


def sync_buy(request: Request) -> Response:
    tracker = current_tracker()  # a sync view runs in a threadpool: the context came along
    assert tracker is request.state.tracker
    conversion = tracker.convert("purchase", conversion_id="ord_sync", value=1, currency="USD")
    return JSONResponse(conversion.pixel_event())


async def fail(request: Request) -> Response:
    convert(request)
    return PlainTextResponse("no", status_code=int(request.query_params["status"]))


async def crash(request: Request) -> Response:
    convert(request)
    raise RuntimeError("boom")


async def stream(request: Request) -> Response:
    async def chunks() -> Any:
        yield b"one,"
        convert(request, "ord_streamed")  # converting while streaming counts too
        yield b"two"

    return StreamingResponse(chunks(), media_type="text/plain")


async def background(request: Request) -> Response:
    def late() -> None:
        current_tracker().convert("lead", conversion_id="lead_bg", email="a@b.c")  # type: ignore[union-attr]

    return PlainTextResponse("ok", background=BackgroundTask(late))


async def own_cookie(request: Request) -> Response:
    response = PlainTextResponse("mine")
    response.set_cookie("tl_attr", "app-value")
    response.set_cookie("other", "1")
    return response


def starlette_app(engine: Any) -> Any:
    app = Starlette(
        routes=[
            Route("/pricing", home),
            Route("/buy", buy, methods=["GET", "POST"]),
            Route("/sync-buy", sync_buy),
            Route("/fail", fail),
            Route("/crash", crash),
            Route("/stream", stream),
            Route("/background", background),
            Route("/own-cookie", own_cookie),
        ]
    )
    app.add_middleware(TrackLayerMiddleware, engine=engine)
    return app


def client(app: Any, base_url: str = "http://shop.test", **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def rows(engine: Any, conversion_id: str) -> list[Any]:
    return engine.outbox.rows(conversion_id)


# ---------------------------------------------------------------- landing
async def test_landing_sets_one_signed_cookie_with_safe_attributes(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        response = await http.get(LANDING)
    assert response.status_code == 200
    (cookie,) = set_cookies(response)
    name, _, rest = cookie.partition("=")
    value, *attributes = rest.split("; ")
    assert name == "tl_attr"
    assert attributes == ["Path=/", "Max-Age=7776000", "HttpOnly", "SameSite=Lax"]
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", value) and len(cookie) < 4096
    attribution = engine.codec.loads_cookie(value)
    assert attribution.twclid == "29q0w6g2k2m4a"
    # Sanitized: no twclid, no e-mail, utm_* kept.
    assert attribution.landing_url == "http://shop.test/pricing?utm_source=x"
    assert "a%40b.c" not in cookie and "a@b.c" not in cookie
    # The same request already sees the click.
    assert response.json()["twclid"] == "29q0w6g2k2m4a"
    assert response.json()["same"] is True


async def test_cookie_is_read_back_and_not_set_again(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        first = await http.get(LANDING)
        again = await http.get("/pricing")
        same_click = await http.get(LANDING)
    assert set_cookies(again) == [] and set_cookies(same_click) == []
    token = again.json()["token"]
    assert again.json()["twclid"] == "29q0w6g2k2m4a"
    assert "." in token and engine.codec.loads_token(token).twclid == "29q0w6g2k2m4a"
    assert first.json()["token"] == token  # same click, same attribution id


async def test_new_click_wins(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        await http.get(LANDING)
        second = await http.get("/pricing?twclid=second_click")
        after = await http.get("/pricing")
    assert len(set_cookies(second)) == 1
    assert after.json()["twclid"] == "second_click"


async def test_non_paid_traffic_gets_no_cookie(make_engine: Any) -> None:
    async with client(starlette_app(make_engine())) as http:
        response = await http.get("/pricing?utm_source=newsletter")
    assert response.status_code == 200 and set_cookies(response) == []
    assert response.json()["twclid"] is None and response.json()["token"] is None


@pytest.mark.parametrize(
    "query",
    ["twclid=", "twclid=bad%20value", "twclid=" + "a" * 129, "twclid=a&twclid=b", "twclid=x.y"],
)
async def test_invalid_or_ambiguous_twclid_is_ignored(make_engine: Any, query: str) -> None:
    async with client(starlette_app(make_engine())) as http:
        response = await http.get(f"/pricing?{query}")
    assert response.status_code == 200 and set_cookies(response) == []


async def test_repeated_identical_twclid_is_one_click(make_engine: Any) -> None:
    async with client(starlette_app(make_engine())) as http:
        response = await http.get("/pricing?twclid=abc&twclid=abc")
    assert response.json()["twclid"] == "abc"


@pytest.mark.parametrize(
    "value",
    ["tampered", "eyJ2IjoxfQ.Zxyz.abc", "", "a" * 5000, '"quoted"', "x" * 10 + "\\"],
)
async def test_tampered_cookie_is_ignored(make_engine: Any, value: str, caplog: Any) -> None:
    async with client(starlette_app(make_engine())) as http:
        http.cookies.set("tl_attr", value)
        with caplog.at_level(logging.DEBUG, logger="tracklayer"):
            response = await http.get("/pricing")
    assert response.status_code == 200
    assert response.json()["twclid"] is None and set_cookies(response) == []


async def test_cookie_signed_by_another_key_is_ignored(make_engine: Any) -> None:
    foreign = make_engine(secret_key="some-other-site-secret-key-000")
    async with client(starlette_app(foreign)) as http:
        landed = await http.get(LANDING)
    value = landed.cookies["tl_attr"]
    async with client(starlette_app(make_engine())) as http:
        http.cookies.set("tl_attr", value)
        response = await http.get("/pricing")
    assert response.status_code == 200 and response.json()["twclid"] is None


async def test_expired_cookie_is_ignored(make_engine: Any) -> None:
    engine = make_engine(cookie_max_age=3600)
    old = Attribution.capture("oldclick", now=datetime.now(timezone.utc) - timedelta(hours=2))
    async with client(starlette_app(engine)) as http:
        http.cookies.set("tl_attr", engine.codec.dumps_cookie(old))
        response = await http.get("/pricing")
    assert response.status_code == 200 and response.json()["twclid"] is None


@pytest.mark.parametrize("value", ["value\r\nX-Injected: 1", "value\n", "a b", "a;b"])
async def test_unsafe_cookie_value_is_never_written(
    make_engine: Any, caplog: Any, value: str
) -> None:
    engine = make_engine()
    engine.codec.dumps_cookie = lambda attribution: value
    async with client(starlette_app(engine)) as http:
        response = await http.get(LANDING)
    assert response.status_code == 200 and set_cookies(response) == []
    assert "x-injected" not in response.headers
    assert "unsafe characters" in caplog.text


async def test_key_rotation_keeps_live_clicks(make_engine: Any) -> None:
    old = make_engine(secret_key="old-secret-key-0123456789abcdef")
    async with client(starlette_app(old)) as http:
        value = (await http.get(LANDING)).cookies["tl_attr"]
    rotated = make_engine(
        secret_key="new-secret-key-0123456789abcdef",
        secret_key_fallbacks=["old-secret-key-0123456789abcdef"],
    )
    async with client(starlette_app(rotated)) as http:
        http.cookies.set("tl_attr", value)
        assert (await http.get("/pricing")).json()["twclid"] == "29q0w6g2k2m4a"


async def test_https_uses_host_prefix_and_secure(make_engine: Any) -> None:
    async with client(starlette_app(make_engine()), base_url="https://shop.test") as http:
        response = await http.get(LANDING)
        again = await http.get("/pricing")
    (cookie,) = set_cookies(response)
    assert cookie.startswith("__Host-tl_attr=")
    assert cookie.endswith("; Path=/; Max-Age=7776000; HttpOnly; SameSite=Lax; Secure")
    assert "Domain" not in cookie
    assert again.json()["twclid"] == "29q0w6g2k2m4a"


@pytest.mark.parametrize(
    ("trusted", "peer", "secure"),
    [
        ((), "10.0.0.5", False),
        (("10.0.0.0/8",), "10.0.0.5", True),
        (("10.0.0.0/8",), "192.0.2.7", False),
        (("*",), "192.0.2.7", True),
        (("127.0.0.1",), "127.0.0.1", True),
    ],
)
async def test_forwarded_proto_only_from_trusted_proxies(
    make_engine: Any, trusted: tuple[str, ...], peer: str, secure: bool
) -> None:
    app = starlette_app(make_engine(trusted_proxies=trusted))
    async with client(app, client=(peer, 5000)) as http:
        response = await http.get(LANDING, headers={"x-forwarded-proto": "https"})
    (cookie,) = set_cookies(response)
    assert cookie.startswith("__Host-tl_attr=") is secure
    assert cookie.endswith("; Secure") is secure


async def test_app_cookie_of_the_same_name_wins(make_engine: Any) -> None:
    async with client(starlette_app(make_engine())) as http:
        response = await http.get("/own-cookie?twclid=abc")
    cookies = set_cookies(response)
    assert [c.split("=")[0] for c in cookies] == ["tl_attr", "other"]
    assert cookies[0].startswith("tl_attr=app-value")


async def test_landing_on_a_server_error_sets_no_cookie(make_engine: Any) -> None:
    async with client(starlette_app(make_engine())) as http:
        response = await http.get("/fail?status=503&twclid=abc")
        redirect_like = await http.get("/fail?status=404&twclid=abc")
    assert response.status_code == 503 and set_cookies(response) == []
    assert len(set_cookies(redirect_like)) == 1


# ---------------------------------------------------------------- consent
async def test_consent_required_without_resolver_stores_nothing(make_engine: Any) -> None:
    async with client(starlette_app(make_engine(consent_required=True))) as http:
        response = await http.get(LANDING)
    assert set_cookies(response) == []
    # The click still attributes this very request (nothing is stored).
    assert response.json()["twclid"] == "29q0w6g2k2m4a"


async def test_resolver_reads_the_sites_cmp(make_engine: Any) -> None:
    seen: list[Any] = []

    def resolver(connection: Any) -> Any:
        seen.append(connection)
        return {"adStorage": connection.cookies.get("cmp_ads", "denied"), "adUserData": "granted"}

    app = starlette_app(make_engine(consent_required=True, consent_resolver=resolver))
    async with client(app) as http:
        denied = await http.get(LANDING)
        http.cookies.set("cmp_ads", "granted")
        granted = await http.get(LANDING)
    assert set_cookies(denied) == [] and len(set_cookies(granted)) == 1
    assert granted.json()["consent"] == {"adStorage": "granted", "adUserData": "granted"}
    assert seen and seen[0].url.path == "/pricing"


async def test_storage_denied_later_clears_the_cookie(make_engine: Any) -> None:
    state = {"consent": Consent(ad_storage=True)}
    app = starlette_app(make_engine(consent_resolver=lambda request: state["consent"]))
    async with client(app) as http:
        await http.get(LANDING)
        state["consent"] = Consent(ad_storage=False)
        response = await http.get("/pricing")
    (cookie,) = set_cookies(response)
    assert cookie.startswith("tl_attr=;") and "Max-Age=0" in cookie
    assert response.json()["twclid"] is None


async def test_broken_resolver_means_unknown_consent(make_engine: Any, caplog: Any) -> None:
    def resolver(request: Any) -> Any:
        raise KeyError("cmp")

    app = starlette_app(make_engine(consent_required=True, consent_resolver=resolver))
    async with client(app) as http:
        response = await http.get(LANDING)
    assert response.status_code == 200 and set_cookies(response) == []
    assert "consent_resolver failed" in caplog.text


# ---------------------------------------------------------------- hand-off
async def test_conversion_is_handed_off_after_the_response(make_engine: Any) -> None:
    engine = make_engine()
    app = starlette_app(engine)
    sent: list[tuple[str, int]] = []

    async def server_send(message: Any) -> None:
        # What the server has committed when each message reaches it.
        sent.append((message["type"], len(rows(engine, "ord_10492_purchase"))))

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/buy",
        "raw_path": b"/buy",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"shop.test")],
        "client": ("127.0.0.1", 1234),
        "server": ("shop.test", 80),
    }
    await TrackLayerMiddleware(app, engine)(scope, receive, server_send)
    assert sent == [("http.response.start", 0), ("http.response.body", 0)]
    (row,) = rows(engine, "ord_10492_purchase")
    assert len(row.record["hashed_email"]) == 64 and "jane" not in str(row.record).lower()


async def test_conversion_carries_the_click(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        await http.get(LANDING)
        response = await http.post("/buy")
    assert response.status_code == 200
    (row,) = rows(engine, "ord_10492_purchase")
    assert row.record["twclid"] == "29q0w6g2k2m4a"
    assert row.record["attribution_note"] == "cookie"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_drops_conversions(make_engine: Any, status: int, caplog: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        with caplog.at_level(logging.WARNING, logger="tracklayer"):
            response = await http.get(f"/fail?status={status}")
    assert response.status_code == status
    assert rows(engine, "ord_10492_purchase") == []
    reason = f"because the response status was {status}"
    assert f"dropped 1 conversion(s) (purchase ord_10492_purchase) {reason}" in caplog.text
    assert "jane" not in caplog.text.lower()


@pytest.mark.parametrize("status", [200, 302, 404, 422])
async def test_any_status_below_500_hands_off(make_engine: Any, status: int) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        await http.get(f"/fail?status={status}")
    assert len(rows(engine, "ord_10492_purchase")) == 1


async def test_app_exception_drops_conversions(make_engine: Any, caplog: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        response = await http.get("/crash")
    assert response.status_code == 500
    assert rows(engine, "ord_10492_purchase") == []
    assert "dropped 1 conversion(s)" in caplog.text


async def test_streaming_response_hands_off_after_last_chunk(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        response = await http.get("/stream?twclid=streamclick")
    assert response.text == "one,two" and len(set_cookies(response)) == 1
    (row,) = rows(engine, "ord_streamed")
    assert row.record["twclid"] == "streamclick"


async def test_sync_view_in_threadpool_sees_current_tracker(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        response = await http.get("/sync-buy")
    assert response.json()["params"]["conversion_id"] == "ord_sync"
    assert len(rows(engine, "ord_sync")) == 1
    assert current_tracker() is None  # nothing leaks out of the request


async def test_background_task_conversion_is_handed_off(make_engine: Any) -> None:
    engine = make_engine()
    async with client(starlette_app(engine)) as http:
        await http.get("/background")
    assert len(rows(engine, "lead_bg")) == 1


async def test_view_conversion_is_committed_before_background_tasks_run(make_engine: Any) -> None:
    engine = make_engine()
    seen_by_task: list[int] = []

    async def view(request: Request) -> Response:
        convert(request)
        task = BackgroundTask(lambda: seen_by_task.append(len(rows(engine, "ord_10492_purchase"))))
        return PlainTextResponse("ok", background=task)

    async with client(TrackLayerMiddleware(Starlette(routes=[Route("/", view)]), engine)) as http:
        await http.get("/")
    assert seen_by_task == [1]  # a slow task cannot hold the view's conversion in memory
    assert len(rows(engine, "ord_10492_purchase")) == 1


async def test_duplicate_convert_in_one_request_is_one_row(make_engine: Any) -> None:
    engine = make_engine()

    async def twice(request: Request) -> Response:
        first = request.state.tracker.convert("lead", conversion_id="l1", email="a@b.c")
        second = request.state.tracker.convert("lead", conversion_id="l1", email="x@y.z")
        assert second is first and len(request.state.tracker.pending) == 1
        return PlainTextResponse("ok")

    app = TrackLayerMiddleware(Starlette(routes=[Route("/", twice)]), engine)
    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
    assert len(rows(engine, "l1")) == 1


async def test_client_disconnect_after_status_still_hands_off(make_engine: Any) -> None:
    engine = make_engine()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["tracklayer.tracker"].convert("lead", conversion_id="l_gone", email="a@b.c")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise OSError("client went away")

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    with pytest.raises(OSError):
        await TrackLayerMiddleware(app, engine)(scope, receive, send)
    assert len(rows(engine, "l_gone")) == 1


async def test_handoff_failure_is_logged_not_raised(make_engine: Any, caplog: Any) -> None:
    engine = make_engine()

    def broken(conversions: Any) -> None:
        raise RuntimeError("disk on fire")

    engine.handoff = broken
    async with client(starlette_app(engine)) as http:
        response = await http.get("/buy")
    assert response.status_code == 200
    assert "hand-off of 1 conversion(s) failed" in caplog.text


async def test_disabled_engine_validates_but_queues_nothing(make_engine: Any) -> None:
    engine = make_engine(enabled=False)
    async with client(starlette_app(engine)) as http:
        landing = await http.get(LANDING)
        response = await http.get("/buy")
    assert set_cookies(landing) == [] and response.status_code == 200
    assert rows(engine, "ord_10492_purchase") == []


# ---------------------------------------------------------------- scopes and construction
@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
async def test_lifespan_and_websocket_pass_through_untouched(make_engine: Any, kind: str) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send, current_tracker()))

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": kind, "path": "/ws?twclid=abc", "headers": [], "query_string": b"twclid=abc"}
    await TrackLayerMiddleware(app, make_engine())(scope, receive, send)
    assert seen == [(scope, receive, send, None)]
    assert "tracklayer.tracker" not in scope and "state" not in scope


async def test_middleware_builds_its_engine_from_settings() -> None:
    from tests.conftest import REQUEST_SETTINGS

    middleware = TrackLayerMiddleware(
        Starlette(routes=[Route("/pricing", home)]), settings=REQUEST_SETTINGS
    )
    try:
        async with client(middleware) as http:
            response = await http.get(LANDING)
        assert response.json()["twclid"] == "29q0w6g2k2m4a"
        assert middleware.engine.settings.pixel_id == "o1a2b"
    finally:
        middleware.engine.close(timeout=1)


def test_engine_and_settings_together_is_a_configuration_error(make_engine: Any) -> None:
    from tracklayer_middleware.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="either engine= or settings"):
        TrackLayerMiddleware(Starlette(), make_engine(), settings={"pixel_id": "o1a2b"})
    with pytest.raises(ConfigurationError, match="needs engine="):
        TrackLayerMiddleware(Starlette())


# ---------------------------------------------------------------- the whole story, to a fake X
async def test_story_from_landing_to_x(make_engine: Any, fake_x: Any) -> None:
    engine = make_engine(
        environment="production",
        api_base_url=fake_x.base_url,
        delivery="background",
        send_external_id=True,
    )

    made: list[Any] = []

    async def checkout(request: Request) -> Response:
        conversion = request.state.tracker.convert(
            "purchase",
            conversion_id="ord_10492_purchase",
            conversion_time=datetime(2026, 4, 24, 9, 42, 13, tzinfo=timezone.utc),
            value=129.95,
            currency="USD",
            description="TrackLayer purchase",
            email="  Test@Example.COM ",
            external_id="cust_10492",
        )
        made.append(conversion)
        return JSONResponse(conversion.pixel_event())

    app = Starlette(
        routes=[Route("/pricing", home), Route("/checkout", checkout, methods=["POST"])]
    )
    async with client(TrackLayerMiddleware(app, engine)) as http:
        await http.get("/pricing?twclid=29q0w6g2k2m4a&utm_source=x")
        pixel = (await http.post("/checkout")).json()
    assert pixel == {
        "event_id": "tw-o1a2b-o87ni",
        "params": {"value": 129.95, "currency": "USD", "conversion_id": "ord_10492_purchase"},
    }
    assert engine.flush(timeout=10)
    (sent,) = fake_x.accepted
    assert sent == made[0].to_x(send_external_id=True)  # what the view built is what X got
    assert sent["conversion_time"] == "2026-04-24T09:42:13.000Z"
    assert {"twclid": "29q0w6g2k2m4a"} in sent["identifiers"]  # from the landing cookie
    assert {"hashed_email": TEST_EMAIL_SHA256} in sent["identifiers"]


def test_client_has_the_response_before_the_handoff_on_a_real_server(make_engine: Any) -> None:
    import socket
    import threading

    import uvicorn

    engine = make_engine()
    handing_off, release, committed = threading.Event(), threading.Event(), threading.Event()
    commit = engine.handoff

    def held_handoff(conversions: Any) -> None:
        handing_off.set()
        release.wait(10)
        commit(conversions)
        committed.set()

    engine.handoff = held_handoff
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # connections wait in the backlog until uvicorn accepts: no start-up race
    server = uvicorn.Server(
        uvicorn.Config(starlette_app(engine), lifespan="off", log_level="error")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        port = listener.getsockname()[1]
        response = httpx.get(f"http://127.0.0.1:{port}/buy", timeout=10)
        assert response.status_code == 200 and response.text == "thanks"
        assert handing_off.wait(10)
        assert rows(engine, "ord_10492_purchase") == []  # the client is done; the commit is not
        release.set()
        assert committed.wait(10)
        assert len(rows(engine, "ord_10492_purchase")) == 1
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)
        listener.close()


async def test_cookie_split_over_several_headers_is_read(make_engine: Any) -> None:
    engine = make_engine()
    value = engine.codec.dumps_cookie(Attribution.capture("splitclick"))
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["tracklayer.tracker"].attribution)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    headers = [(b"cookie", b"a=1"), (b"cookie", f"tl_attr={value}".encode()), (b"cookie", b"b=2")]
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": headers}
    await TrackLayerMiddleware(app, engine)(scope, receive, send)
    assert seen[0].twclid == "splitclick"
