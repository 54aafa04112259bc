"""TrackLayerWSGIMiddleware over real HTTP (httpx.WSGITransport, and wsgiref on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import FileWrapper

import httpx
import pytest

from tracklayer_middleware.tracker import current_tracker
from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

LANDING = "/pricing?twclid=29q0w6g2k2m4a&utm_source=x"


def plain_app(environ: dict[str, Any], start_response: Any) -> Any:
    """A framework-free WSGI app with one route per behaviour under test."""
    tracker = environ["tracklayer.tracker"]
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))

    def buy(conversion_id: str = "ord_1") -> None:
        tracker.convert(
            "purchase",
            conversion_id=conversion_id,
            value=10,
            currency="EUR",
            email="jane@example.com",
        )

    if path == "/pricing":
        attribution = tracker.attribution
        body = {
            "twclid": attribution.twclid if attribution else None,
            "same": current_tracker() is tracker,
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
    if path == "/buy":
        buy()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"thanks"]
    if path == "/status":
        buy()
        status = query["code"][0]
        start_response(f"{status} Whatever", [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/crash":
        buy()
        raise RuntimeError("boom")
    if path == "/exc-info":
        buy()
        try:
            raise ValueError("handled by the app's error page")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"error page"]
    if path == "/stream":

        def chunks() -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"one,"
            current_tracker().convert("lead", conversion_id="lead_streamed", email="a@b.c")  # type: ignore[union-attr]
            yield b"two"

        return chunks()
    if path == "/broken-stream":

        def broken() -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            raise RuntimeError("template failed half way")

        buy()
        return broken()
    if path == "/own-cookie":
        start_response("200 OK", [("Set-Cookie", "tl_attr=app-value; Path=/")])
        return [b"mine"]
    raise AssertionError(path)


@pytest.fixture
def wsgi(make_engine: Any) -> Any:
    """``wsgi(**settings)`` → (httpx.Client over the middleware, engine)."""

    def build(
        base_url: str = "http://shop.test", remote_addr: str = "127.0.0.1", **settings: Any
    ) -> Any:
        engine = make_engine(**settings)
        app = TrackLayerWSGIMiddleware(plain_app, engine)
        transport = httpx.WSGITransport(app=app, remote_addr=remote_addr)
        return httpx.Client(transport=transport, base_url=base_url), engine

    return build


def call(app: Any, path: str, query: str = "", **environ: Any) -> tuple[list[str], Any]:
    """Call a WSGI app like a server would, without iterating or closing the response."""
    statuses: list[str] = []
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_HOST": "shop.test",
        "wsgi.url_scheme": "http",
        **environ,
    }
    result = app(base, lambda status, headers, exc_info=None: statuses.append(status))
    return statuses, result


# ---------------------------------------------------------------- landing
def test_landing_sets_a_signed_cookie(wsgi: Any) -> None:
    http, engine = wsgi()
    response = http.get(LANDING)
    (cookie,) = response.headers.get_list("set-cookie")
    assert cookie.startswith("tl_attr=")
    assert cookie.endswith("; Path=/; Max-Age=7776000; HttpOnly; SameSite=Lax")
    value = cookie.split(";")[0].split("=", 1)[1]
    assert engine.codec.loads_cookie(value).landing_url == "http://shop.test/pricing?utm_source=x"
    assert response.json() == {"twclid": "29q0w6g2k2m4a", "same": True}
    assert http.get("/pricing").json()["twclid"] == "29q0w6g2k2m4a"


def test_non_paid_traffic_and_tampered_cookie(wsgi: Any) -> None:
    http, _ = wsgi()
    plain = http.get("/pricing?utm_source=newsletter")
    assert plain.status_code == 200 and "set-cookie" not in plain.headers
    http.cookies.set("tl_attr", "forged.value.here")
    forged = http.get("/pricing")
    assert forged.status_code == 200 and forged.json()["twclid"] is None


def test_https_and_trusted_proxy(wsgi: Any) -> None:
    https, _ = wsgi(base_url="https://shop.test")
    assert https.get(LANDING).headers["set-cookie"].startswith("__Host-tl_attr=")
    proxied, _ = wsgi(remote_addr="10.1.2.3", trusted_proxies=["10.0.0.0/8"])
    cookie = proxied.get(LANDING, headers={"x-forwarded-proto": "https"}).headers["set-cookie"]
    assert cookie.startswith("__Host-tl_attr=") and cookie.endswith("; Secure")
    spoofed, _ = wsgi(remote_addr="192.0.2.1", trusted_proxies=["10.0.0.0/8"])
    cookie = spoofed.get(LANDING, headers={"x-forwarded-proto": "https"}).headers["set-cookie"]
    assert cookie.startswith("tl_attr=") and "Secure" not in cookie


def test_app_cookie_of_the_same_name_wins(wsgi: Any) -> None:
    http, _ = wsgi()
    assert http.get("/own-cookie?twclid=abc").headers.get_list("set-cookie") == [
        "tl_attr=app-value; Path=/"
    ]


def test_consent_denied_by_resolver(wsgi: Any) -> None:
    http, _ = wsgi(consent_resolver=lambda environ: {"adStorage": "denied"})
    http.cookies.set("tl_attr", "old")
    response = http.get(LANDING)
    (cookie,) = response.headers.get_list("set-cookie")
    assert "Max-Age=0" in cookie and response.json()["twclid"] == "29q0w6g2k2m4a"


# ---------------------------------------------------------------- hand-off
def test_handoff_happens_in_close_not_before(make_engine: Any) -> None:
    engine = make_engine()
    statuses, result = call(TrackLayerWSGIMiddleware(plain_app, engine), "/buy")
    assert b"".join(result) == b"thanks" and statuses == ["200 OK"]
    assert engine.outbox.rows("ord_1") == []  # body sent, response not closed yet
    result.close()
    assert len(engine.outbox.rows("ord_1")) == 1
    result.close()  # idempotent
    assert len(engine.outbox.rows("ord_1")) == 1


def test_conversion_over_http_carries_the_click(wsgi: Any) -> None:
    http, engine = wsgi()
    http.get(LANDING)
    assert http.get("/buy").status_code == 200
    (row,) = engine.outbox.rows("ord_1")
    assert row.record["twclid"] == "29q0w6g2k2m4a" and len(row.record["hashed_email"]) == 64


@pytest.mark.parametrize(("code", "kept"), [(200, 1), (302, 1), (404, 1), (500, 0), (503, 0)])
def test_status_decides(wsgi: Any, code: int, kept: int) -> None:
    http, engine = wsgi()
    assert http.get(f"/status?code={code}").status_code == code
    assert len(engine.outbox.rows("ord_1")) == kept


@pytest.mark.parametrize(
    ("path", "raises"), [("/crash", True), ("/exc-info", False), ("/broken-stream", True)]
)
def test_app_failures_drop_conversions(
    make_engine: Any, path: str, raises: bool, caplog: Any
) -> None:
    engine = make_engine()
    app = TrackLayerWSGIMiddleware(plain_app, engine)
    raised = False
    with caplog.at_level(logging.WARNING, logger="tracklayer"):
        try:
            _, result = call(app, path)
            try:
                list(result)
            finally:
                result.close()
        except RuntimeError:
            raised = True  # the app's error reaches the server untouched
    assert raised is raises
    assert engine.outbox.rows("ord_1") == []
    assert "dropped 1 conversion(s) (purchase ord_1)" in caplog.text
    assert "jane" not in caplog.text


def test_streaming_converts_during_iteration(wsgi: Any) -> None:
    http, engine = wsgi()
    assert http.get("/stream").text == "one,two"
    assert len(engine.outbox.rows("lead_streamed")) == 1
    assert current_tracker() is None


def test_client_gone_mid_stream_still_hands_off(make_engine: Any) -> None:
    engine = make_engine()
    _, result = call(TrackLayerWSGIMiddleware(plain_app, engine), "/broken-stream")
    assert next(iter(result)) == b"partial"
    result.close()  # the server gave up sending: no app failure was seen
    assert len(engine.outbox.rows("ord_1")) == 1


# ---------------------------------------------------------------- the response iterable
def test_len_and_close_pass_through(make_engine: Any) -> None:
    closed: list[bool] = []

    class Body(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "5")])
        return Body([b"hello"])

    middleware = TrackLayerWSGIMiddleware(app, make_engine())
    _, result = call(middleware, "/")
    assert len(result) == 1 and list(result) == [b"hello"]
    result.close()
    assert closed == [True]
    _, streamed = call(TrackLayerWSGIMiddleware(plain_app, make_engine()), "/stream")
    assert not hasattr(streamed, "__len__")
    streamed.close()


def test_real_server_closes_and_hands_off(make_engine: Any) -> None:
    engine = make_engine()

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server(
        "127.0.0.1", 0, TrackLayerWSGIMiddleware(plain_app, engine), handler_class=Quiet
    )
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        port = server.server_address[1]
        response = httpx.get(f"http://127.0.0.1:{port}/buy?twclid=realclick", timeout=5)
    finally:
        thread.join(timeout=5)
        server.server_close()
    assert response.status_code == 200 and response.headers["content-length"] == "6"
    assert response.headers["set-cookie"].startswith("tl_attr=")
    (row,) = engine.outbox.rows("ord_1")
    assert row.record["twclid"] == "realclick"


def test_file_responses_keep_the_servers_file_wrapper(make_engine: Any) -> None:
    engine = make_engine()
    seen: list[Any] = []

    def app(environ: Any, start_response: Any) -> Any:
        if "buy" in environ["PATH_INFO"]:
            environ["tracklayer.tracker"].convert("lead", conversion_id="l_file", email="a@b.c")
        start_response("200 OK", [("Content-Type", "application/pdf")])
        seen.append(environ["wsgi.file_wrapper"](io.BytesIO(b"%PDF")))
        return seen[-1]

    middleware = TrackLayerWSGIMiddleware(app, engine)
    _, plain = call(middleware, "/receipt.pdf", **{"wsgi.file_wrapper": FileWrapper})
    assert plain is seen[0] and current_tracker() is None  # sendfile still possible
    _, converted = call(middleware, "/buy/receipt.pdf", **{"wsgi.file_wrapper": FileWrapper})
    assert converted is not seen[1] and b"".join(converted) == b"%PDF"
    assert engine.outbox.rows("l_file") == []
    converted.close()
    assert len(engine.outbox.rows("l_file")) == 1


def test_flush_waits_for_a_hand_off_the_server_has_not_run_yet(
    make_engine: Any, fake_x: Any
) -> None:
    """DESIGN: flush() also waits for hand-offs of requests that have already answered."""
    engine = make_engine(
        environment="production", api_base_url=fake_x.base_url, delivery="background"
    )
    release = threading.Event()

    class HeldBody(list[bytes]):
        def close(self) -> None:  # the server is slow to close: the hand-off is not run yet
            release.wait(10)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["tracklayer.tracker"].convert(
            "purchase", conversion_id="ord_held", value=1.0, currency="USD", email="a@b.c"
        )
        start_response("200 OK", [("Content-Length", "2")])
        return HeldBody([b"ok"])

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, TrackLayerWSGIMiddleware(app, engine), handler_class=Quiet)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/buy", timeout=5)
        assert response.status_code == 200 and response.content == b"ok"
        assert engine.flush(0.2) is False, "flush() missed a hand-off the server still owes"
    finally:
        release.set()
        thread.join(timeout=5)
        server.server_close()
    assert engine.flush(10)
    assert fake_x.accepted_ids() == {"ord_held": 1}
