"""The browser's attribution report endpoint, answered by the middleware itself.

Every case runs through both shells over real HTTP: ``TrackLayerMiddleware`` with
``httpx.ASGITransport`` and ``TrackLayerWSGIMiddleware`` with ``httpx.WSGITransport``.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.gateway import MAX_BODY
from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

PATH = "/api/tracklayer/session-attribution"
SITE = "http://shop.test"
REPORT = {
    "twclid": "29q0w6g2k2m4a",
    "landingUrl": "http://shop.test/pricing?twclid=29q0w6g2k2m4a&utm_campaign=spring&email=a@b.c",
    "consent": {"adStorage": "granted", "adUserData": "granted"},
}

Send = Callable[..., httpx.Response]


async def asgi_app_never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not see the attribution endpoint")


def wsgi_app_never_called(environ: Any, start_response: Any) -> Any:
    raise AssertionError("the app must not see the attribution endpoint")


@pytest.fixture(params=["asgi", "wsgi"])
def shell(request: pytest.FixtureRequest, make_engine: Any) -> Callable[..., Send]:
    """``shell(**settings)`` → ``send(method, url, **httpx_kwargs)`` through one middleware."""

    def build(base_url: str = SITE, **settings: Any) -> Send:
        engine = make_engine(**settings)
        middleware = TrackLayerWSGIMiddleware(wsgi_app_never_called, engine)

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            # Like gunicorn: a chunked body is delimited by the server.
            chunked = environ.get("HTTP_TRANSFER_ENCODING") == "chunked"
            environ["wsgi.input_terminated"] = chunked
            return middleware(environ, start_response)

        asgi = TrackLayerMiddleware(asgi_app_never_called, engine)

        def send(method: str, url: str, **kwargs: Any) -> httpx.Response:
            if request.param == "wsgi":
                with httpx.Client(transport=httpx.WSGITransport(app=wsgi), base_url=base_url) as c:
                    return c.request(method, url, **kwargs)

            async def go() -> httpx.Response:
                transport = httpx.ASGITransport(app=asgi)
                async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
                    return await http.request(method, url, **kwargs)

            return anyio.run(go)

        send.engine = engine  # type: ignore[attr-defined]
        send.kind = request.param  # type: ignore[attr-defined]
        return send

    return build


def post(send: Send, body: Any = REPORT, *, origin: str | None = SITE, **kwargs: Any) -> Any:
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    if origin is not None:
        headers["origin"] = origin
    if "content" not in kwargs:
        kwargs["content"] = body if isinstance(body, bytes) else json.dumps(body).encode()
    return send("POST", PATH, headers=headers, **kwargs)


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    return str(response.json()["error"])


# ---------------------------------------------------------------- accepted
def test_report_sets_the_cookie(shell: Any, make_engine: Any) -> None:
    response = post(shell())
    assert response.status_code == 204 and response.content == b""
    assert "content-length" not in response.headers
    (cookie,) = response.headers.get_list("set-cookie")
    assert cookie.startswith("tl_attr=")
    assert cookie.endswith("; Path=/; Max-Age=7776000; HttpOnly; SameSite=Lax")
    value = cookie.split(";")[0].split("=", 1)[1]
    attribution = make_engine().codec.loads_cookie(value)  # same secret: a second engine reads it
    assert attribution.twclid == "29q0w6g2k2m4a"
    assert attribution.landing_url == "http://shop.test/pricing?utm_campaign=spring"
    assert attribution.consent.to_json() == {"adStorage": "granted", "adUserData": "granted"}
    assert response.headers["cache-control"] == "no-store"


def test_minimal_report_and_charset_are_fine(shell: Any) -> None:
    send = shell()
    response = post(
        send, {"twclid": "abc"}, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 204 and len(response.headers.get_list("set-cookie")) == 1


def test_referer_is_the_fallback_for_a_missing_origin(shell: Any) -> None:
    response = post(shell(), origin=None, headers={"referer": f"{SITE}/pricing?twclid=x"})
    assert response.status_code == 204


def test_https_report_sets_host_prefixed_secure_cookie(shell: Any) -> None:
    send = shell(base_url="https://shop.test")
    (cookie,) = post(send, origin="https://shop.test").headers.get_list("set-cookie")
    assert cookie.startswith("__Host-tl_attr=") and cookie.endswith("; Secure")


def test_same_click_reported_again_keeps_its_identity(shell: Any, make_engine: Any) -> None:
    send = shell()
    first = post(send).headers["set-cookie"].split(";")[0]
    denied_data = {**REPORT, "consent": {"adStorage": "granted", "adUserData": "denied"}}
    second = post(send, denied_data, headers={"cookie": first})
    codec = make_engine().codec
    before = codec.loads_cookie(first.split("=", 1)[1])
    after = codec.loads_cookie(second.headers["set-cookie"].split(";")[0].split("=", 1)[1])
    assert after.attribution_id == before.attribution_id
    assert after.captured_at == before.captured_at
    assert after.consent.ad_user_data is False


def test_browser_cannot_choose_pixel_token_or_endpoint(shell: Any, make_engine: Any) -> None:
    hostile = {
        **REPORT,
        "pixelId": "evil1",
        "pixel_id": "evil1",
        "token": "stolen",
        "endpoint": "https://evil.example/collect",
        "api_base_url": "https://evil.example",
    }
    send = shell()
    response = post(send, hostile)
    assert response.status_code == 204
    cookie = response.headers["set-cookie"]
    assert "evil" not in cookie and "stolen" not in cookie
    assert send.engine.settings.pixel_id == "o1a2b"
    assert send.engine.settings.api_base_url == "https://ads-api.x.com"


# ---------------------------------------------------------------- consent
def test_storage_denied_clears_the_cookie_and_stores_nothing(shell: Any) -> None:
    send = shell()
    denied = {**REPORT, "consent": {"adStorage": "denied", "adUserData": "granted"}}
    response = post(send, denied, headers={"cookie": "tl_attr=whatever-was-there"})
    assert response.status_code == 204
    (cookie,) = response.headers.get_list("set-cookie")
    assert cookie.startswith("tl_attr=;") and "Max-Age=0" in cookie


def test_consent_required_and_unknown_stores_nothing(shell: Any) -> None:
    response = post(shell(consent_required=True), {"twclid": "abc"})
    assert response.status_code == 204
    assert all("Max-Age=0" in c for c in response.headers.get_list("set-cookie"))


def test_a_denial_from_the_sites_resolver_wins(shell: Any) -> None:
    send = shell(consent_resolver=lambda request: {"adStorage": "denied"})
    response = post(send)
    assert response.status_code == 204 and "Max-Age=0" in response.headers["set-cookie"]


def test_disabled_engine_answers_without_cookie(shell: Any) -> None:
    response = post(shell(enabled=False))
    assert response.status_code == 204 and "set-cookie" not in response.headers


# ---------------------------------------------------------------- refused
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[" * 4000 + b"]" * 4000, "not valid JSON"),
        (["twclid", "abc"], "JSON object"),
        ({}, "twclid"),
        ({"twclid": None}, "twclid"),
        ({"twclid": 42}, "twclid"),
        ({"twclid": "has space"}, "twclid"),
        ({"twclid": "a" * 129}, "twclid"),
        ({"twclid": "abc", "landingUrl": 7}, "landingUrl"),
        ({"twclid": "abc", "consent": "granted"}, "consent"),
        ({"twclid": "abc", "consent": {"adStorage": "yes"}}, "adStorage"),
    ],
)
def test_bad_report_is_400_with_a_json_error(shell: Any, body: Any, message: str) -> None:
    response = post(shell(), body)
    assert response.status_code == 400
    assert message in error_of(response)
    assert "set-cookie" not in response.headers


def test_declared_oversized_body_is_413(shell: Any) -> None:
    body = {"twclid": "abc", "padding": "x" * MAX_BODY}
    response = post(shell(), body)
    assert response.status_code == 413 and "8192" in error_of(response)


def test_streamed_oversized_body_is_413(shell: Any) -> None:
    parts = [b'{"twclid": "abc", "padding": "', *[b"x" * 1024] * 20, b'"}']

    async def async_chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    send = shell()
    chunks = iter(parts) if send.kind == "wsgi" else async_chunks()
    response = post(send, content=chunks)  # no Content-Length: chunked
    assert response.status_code == 413


def test_body_of_exactly_the_limit_is_read(shell: Any) -> None:
    body = json.dumps({"twclid": "abc", "p": ""}).encode()
    body = body[:-2] + b"x" * (MAX_BODY - len(body)) + b'"}'
    assert len(body) == MAX_BODY
    assert post(shell(), body).status_code == 204


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(shell: Any, method: str) -> None:
    response = shell()(method, PATH, headers={"origin": SITE})
    assert response.status_code == 405 and response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://shop.test.evil.example"},
        {"origin": "https://shop.test"},  # another scheme is another origin
        {"origin": "null"},
        {"origin": None},
        {"origin": None, "referer": "https://evil.example/page"},
        {"origin": "https://evil.example", "referer": f"{SITE}/pricing"},
    ],
)
def test_cross_site_report_is_403(shell: Any, headers: dict[str, Any]) -> None:
    headers = dict(headers)
    origin = headers.pop("origin")
    response = post(shell(), origin=origin, headers=headers)
    assert response.status_code == 403 and "cross-site" in error_of(response)
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_content_type_is_415(shell: Any, content_type: str) -> None:
    response = post(shell(), headers={"content-type": content_type})
    assert response.status_code == 415


# ---------------------------------------------------------------- allowed origins (CORS)
def test_allowed_origin_may_report_with_cors(shell: Any) -> None:
    send = shell(allowed_origins=["https://www.shop.test"])
    preflight = send(
        "OPTIONS",
        PATH,
        headers={
            "origin": "https://www.shop.test",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://www.shop.test"
    assert preflight.headers["access-control-allow-methods"] == "POST"
    response = post(send, origin="https://www.shop.test")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://www.shop.test"
    assert response.headers["access-control-allow-credentials"] == "true"
    refused = post(send, origin="https://evil.example")
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


def test_proxy_forwarded_host_counts_only_from_trusted_peers(shell: Any) -> None:
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "www.shop.test"}
    trusting = shell(trusted_proxies=["*"])
    response = post(trusting, origin="https://www.shop.test", headers=forwarded)
    assert response.status_code == 204
    assert response.headers["set-cookie"].startswith("__Host-tl_attr=")
    untrusting = shell()
    assert post(untrusting, origin="https://www.shop.test", headers=forwarded).status_code == 403


# ---------------------------------------------------------------- raw server calls
REPORT_HEADERS = {"host": "shop.test", "origin": SITE, "content-type": "application/json"}


def raw_asgi_report(engine: Any, receive: Any, **headers: str) -> list[dict[str, Any]]:
    """POST a report straight into TrackLayerMiddleware as a server would; the sent messages."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "query_string": b"",
        "headers": [
            (k.replace("_", "-").encode(), v.encode("latin-1"))
            for k, v in {**REPORT_HEADERS, **headers}.items()
        ],
    }
    anyio.run(TrackLayerMiddleware(asgi_app_never_called, engine), scope, receive, send)
    return sent


def raw_wsgi_report(engine: Any, wsgi_input: Any, **environ: Any) -> tuple[list[str], bytes]:
    """POST a report straight into TrackLayerWSGIMiddleware; (status lines, body)."""
    statuses: list[str] = []
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "HTTP_HOST": "shop.test",
        "HTTP_ORIGIN": SITE,
        "CONTENT_TYPE": "application/json",
        "wsgi.url_scheme": "http",
        "wsgi.input": wsgi_input,
        **environ,
    }
    app = TrackLayerWSGIMiddleware(wsgi_app_never_called, engine)
    body = b"".join(app(base, lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses, body


def test_asgi_reads_no_more_than_the_limit(make_engine: Any) -> None:
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1024)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}  # endless

    sent = raw_asgi_report(make_engine(), receive)
    assert sum(received) <= MAX_BODY + 1024
    assert sent[0]["status"] == 413


def test_wsgi_reads_no_more_than_the_limit(make_engine: Any) -> None:
    class EndlessInput:
        read_total = 0

        def read(self, size: int = -1) -> bytes:
            assert size >= 0, "must never read without a size"
            EndlessInput.read_total += size
            return b"x" * size

    statuses, body = raw_wsgi_report(
        make_engine(), EndlessInput(), **{"wsgi.input_terminated": True}
    )
    assert statuses == ["413 Request Entity Too Large"]
    assert EndlessInput.read_total == MAX_BODY + 1
    assert b"8192" in body


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "\u00b2", "9" * 40, "1" * 5000])
def test_malformed_content_length_is_400_in_both_shells(make_engine: Any, length: str) -> None:
    engine = make_engine()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    assert raw_asgi_report(engine, receive, content_length=length)[0]["status"] == 400
    statuses, _ = raw_wsgi_report(engine, io.BytesIO(b"{}"), CONTENT_LENGTH=length)
    assert statuses == ["400 Bad Request"]
