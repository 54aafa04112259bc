"""Fuzzed requests through the ASGI middleware: any bytes a client can put in the Cookie
header, the query string, the Host/Origin/forwarded headers or the attribution report are
answered without a 5xx, and never produce a cookie the codec would not read back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import Observed, asgi_call, shop_app
from tracklayer_middleware.asgi import TrackLayerMiddleware
from tracklayer_middleware.engine import TrackLayer

pytestmark = pytest.mark.adversarial_input

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
header_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
tokenish = st.sampled_from([b"tl_attr", b"__Host-tl_attr", b"twclid", b"utm_source", b"", b"="])
cookie_headers = st.one_of(
    header_bytes,
    st.lists(st.tuples(tokenish, header_bytes), max_size=5).map(
        lambda pairs: b"; ".join(k + b"=" + v for k, v in pairs)
    ),
)
queries = st.one_of(
    header_bytes,
    st.lists(st.tuples(tokenish, st.from_regex(rb"[A-Za-z0-9_%.\-]{0,140}", fullmatch=True)),
             max_size=5).map(lambda pairs: b"&".join(k + b"=" + v for k, v in pairs)),
)


@pytest.fixture
def app(make_engine: Callable[..., TrackLayer]) -> Any:
    return TrackLayerMiddleware(shop_app(), make_engine(trusted_proxies=["203.0.113.0/24"]))


def cookies_are_ours(engine: TrackLayer, headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"set-cookie":
            cookie = value.decode("latin-1").partition(";")[0].partition("=")[2]
            if cookie and engine.codec.loads_cookie(cookie) is None:
                return False
    return True


@FUZZ
@given(cookie=cookie_headers, query=queries)
def test_any_cookie_and_query_on_a_landing(app: Any, cookie: bytes, query: bytes) -> None:
    observed = Observed()
    status, headers = asgi_call(app, "GET", "/whoami", query=query,
                           headers=[(b"host", b"shop.test"), (b"cookie", cookie)])
    assert observed.status(status) == 200
    assert cookies_are_ours(app.engine, headers)


@FUZZ
@given(host=header_bytes, proto=header_bytes, fwd_host=header_bytes, origin=header_bytes)
def test_any_host_and_forwarded_headers(
    app: Any, host: bytes, proto: bytes, fwd_host: bytes, origin: bytes
) -> None:
    headers = [(b"host", host), (b"x-forwarded-proto", proto), (b"x-forwarded-host", fwd_host),
               (b"origin", origin), (b"referer", origin)]
    status, out = asgi_call(app, "GET", "/pricing", query=b"twclid=fuzzclick", headers=headers)
    assert status == 200 and cookies_are_ours(app.engine, out)
    status, out = asgi_call(app, "POST", app.engine.settings.attribution_path,
                       headers=[*headers, (b"content-type", b"application/json")],
                       body=b'{"twclid": "fuzzclick"}')
    assert status < 500 and cookies_are_ours(app.engine, out)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=10,
)
reports = st.fixed_dictionaries(
    {},
    optional={"twclid": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,130}", fullmatch=True),
                                  json_values),
              "landingUrl": st.one_of(st.text(max_size=300), json_values),
              "consent": st.one_of(
                  st.fixed_dictionaries({}, optional={
                      "adStorage": st.sampled_from(["granted", "denied", "", "GRANTED", None]),
                      "adUserData": st.one_of(st.sampled_from(["granted", "denied"]),
                                              json_values)}),
                  json_values)},
)


@FUZZ
@given(report=st.one_of(reports, json_values), raw=st.one_of(st.none(), st.binary(max_size=400)),
       content_type=st.sampled_from([b"application/json", b"application/json; charset=latin-1",
                                     b"text/plain", b""]))
def test_any_attribution_report(
    app: Any, report: Any, raw: bytes | None, content_type: bytes
) -> None:
    import json

    body = raw if raw is not None else json.dumps(report).encode()
    status, headers = asgi_call(
        app, "POST", app.engine.settings.attribution_path, body=body,
        headers=[(b"host", b"shop.test"), (b"origin", b"http://shop.test"),
                 (b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    )
    assert status in (204, 400, 413, 415), status
    assert cookies_are_ours(app.engine, headers)


latin1 = header_bytes.map(lambda b: b.decode("latin-1"))


@FUZZ
@given(cookie=latin1, query=latin1, host=latin1, body=st.binary(max_size=300),
       length=st.one_of(st.none(), st.text(alphabet="0123456789 -+x", max_size=6)))
def test_any_environ_on_the_wsgi_shell(
    engine: TrackLayer, cookie: str, query: str, host: str, body: bytes, length: str | None
) -> None:
    """WSGI servers hand header bytes over as latin-1 text: any of them, on a landing page
    and on the attribution endpoint, is answered without a 5xx."""
    import io

    from tests.adversarial.test_wsgi_shell import shop
    from tracklayer_middleware.wsgi import TrackLayerWSGIMiddleware

    app = TrackLayerWSGIMiddleware(shop, engine)
    for method, path in (("GET", "/whoami"), ("POST", engine.settings.attribution_path)):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "SERVER_NAME": "shop.test", "SERVER_PORT": "80", "HTTP_HOST": host,
                   "HTTP_COOKIE": cookie, "HTTP_ORIGIN": "http://" + host,
                   "CONTENT_TYPE": "application/json", "wsgi.url_scheme": "http",
                   "REMOTE_ADDR": "203.0.113.7", "wsgi.input": io.BytesIO(body)}
        if length is not None:
            environ["CONTENT_LENGTH"] = length
        seen: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None, seen: list[Any] = seen) -> None:
            seen.append((status, headers))

        result = app(environ, start_response)
        try:
            b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        status, headers = seen[0]
        assert int(status.split()[0]) < 500, status
        raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
        assert cookies_are_ours(engine, raw)
