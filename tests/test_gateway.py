"""RequestGateway on any input: never raises, never writes an unsafe header (hypothesis)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REQUEST_SETTINGS
from tracklayer_middleware.attribution import valid_twclid
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.gateway import RequestGateway

SAFE_SET_COOKIE = re.compile(
    r"(__Host-)?tl_attr=[A-Za-z0-9_.-]*; Path=/; Max-Age=\d+; HttpOnly; SameSite=Lax(; Secure)?"
)
HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
# Latin-1 text as servers hand it over, with the characters attackers like best.
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=300)
QUERY = st.one_of(
    LATIN1,
    st.lists(st.tuples(st.sampled_from(["twclid", "utm_source", "x"]), LATIN1), max_size=4).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
)


@dataclass
class Facts:
    """A framework-free ``RequestFacts`` for driving the gateway directly."""

    method: str = "GET"
    scheme: str = "http"
    path: str = "/"
    query_string: str = ""
    host: str = "shop.test"
    peer: str | None = "127.0.0.1"
    native: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@pytest.fixture(scope="module")
def gateway() -> Any:
    engine = TrackLayer({**REQUEST_SETTINGS, "trusted_proxies": ["10.0.0.0/8"]})
    yield RequestGateway(engine)
    engine.close(timeout=1)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=QUERY,
    cookie=st.one_of(st.none(), LATIN1.map(lambda v: f"tl_attr={v}"), LATIN1),
    forwarded=st.one_of(st.none(), LATIN1),
    host=LATIN1,
    peer=st.sampled_from([None, "10.1.2.3", "192.0.2.1", "not-an-ip", "unix:/tmp/sock"]),
    scheme=st.sampled_from(["http", "https"]),
)
def test_landing_never_raises_and_writes_only_safe_cookies(
    gateway: RequestGateway,
    query: str,
    cookie: str | None,
    forwarded: str | None,
    host: str,
    peer: str | None,
    scheme: str,
) -> None:
    headers = {"cookie": cookie, "x-forwarded-proto": forwarded, "x-forwarded-host": forwarded}
    facts = Facts(
        scheme=scheme,
        query_string=query,
        host=host,
        peer=peer,
        headers={k: v for k, v in headers.items() if v is not None},
    )
    tracker, cookies = gateway.open(facts)
    for value in cookies:
        assert SAFE_SET_COOKIE.fullmatch(value), value
    if tracker.attribution is not None:
        assert valid_twclid(tracker.attribution.twclid)
        assert "twclid" in query or cookie is not None


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["POST", "GET", "OPTIONS", "PUT", "post"]),
    origin=st.one_of(st.none(), st.just("http://shop.test"), LATIN1),
    referer=st.one_of(st.none(), LATIN1),
    content_type=st.one_of(st.none(), st.just("application/json"), LATIN1),
    length=st.one_of(st.none(), LATIN1, st.integers(-5, 20_000).map(str)),
    body=st.one_of(
        st.binary(max_size=9000),
        st.dictionaries(
            st.sampled_from(["twclid", "landingUrl", "consent", "pixelId"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(),
                LATIN1,
                st.dictionaries(st.sampled_from(["adStorage", "adUserData"]), LATIN1),
            ),
        ).map(lambda d: json.dumps(d).encode()),
    ),
)
def test_endpoint_answers_every_input_with_a_4xx_or_204(
    gateway: RequestGateway,
    method: str,
    origin: str | None,
    referer: str | None,
    content_type: str | None,
    length: str | None,
    body: bytes,
) -> None:
    headers = {
        "origin": origin,
        "referer": referer,
        "content-type": content_type,
        "content-length": length,
    }
    facts = Facts(
        method=method,
        path=gateway.settings.attribution_path,
        headers={k: v for k, v in headers.items() if v is not None},
    )
    response = gateway.check_endpoint(facts) or gateway.answer_endpoint(facts, body[:8193])
    assert response.status in (204, 400, 403, 405, 413, 415)
    for name, value in response.headers:
        assert HEADER_VALUE.fullmatch(value), (name, value)
        if name == "set-cookie":
            assert SAFE_SET_COOKIE.fullmatch(value), value
