"""XConversionsClient: every outcome of a POST to X becomes the right SendResult kind.

Real HTTP against the fake X on 127.0.0.1 where a socket matters (timeouts, dropped
connections, keep-alive); httpx.MockTransport for answers a fake server would only mimic.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from tracklayer_middleware.delivery.client import (
    SendResult,
    XConversionsClient,
    XError,
    parse_retry_after,
)
from tracklayer_middleware.errors import DeliveryError
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI

SECRET = "sekrit-TOKEN-0123456789"


def make_settings(base_url: str = "http://127.0.0.1:9", **overrides: object) -> TrackLayerSettings:
    values: dict[str, object] = {
        "pixel_id": "o1a2b",
        "secret_key": "k" * 32,
        "api_base_url": base_url,
        "environment": "production",
    }
    values.update(overrides)
    return TrackLayerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def token_in_env(monkeypatch):
    """A token for tests without the fake_x fixture (which sets its own)."""
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", SECRET)


@pytest.fixture
def client(fake_x: FakeXConversionsAPI):
    with XConversionsClient(make_settings(fake_x.base_url)) as c:
        yield c


def mock_client(handler, **overrides: object) -> XConversionsClient:
    return XConversionsClient(make_settings(**overrides), transport=httpx.MockTransport(handler))


# ---------------------------------------------------------------------- success


def test_ok_posts_the_batch_to_the_pixel_endpoint(client, fake_x, x_conversion):
    result = client.send([x_conversion("a"), x_conversion("b")])

    assert result.kind == "ok" and result.ok
    assert (result.status_code, result.accepted) == (200, 2)
    assert result.debug_id and result.errors == ()
    assert result.latency_ms > 0
    (request,) = fake_x.requests
    assert request.path == "/12/measurement/conversions/o1a2b"
    assert request.json() == {"conversions": [x_conversion("a"), x_conversion("b")]}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("tracklayer-middleware/")
    assert request.auth_scheme == "bearer"
    assert fake_x.accepted_ids() == {"a": 1, "b": 1}


def test_connection_is_reused_between_sends(client, fake_x, x_conversion):
    assert client.send([x_conversion("a")]).ok
    assert client.send([x_conversion("b")]).ok
    first, second = fake_x.requests
    assert first.client_port == second.client_port


def test_pixel_id_argument_picks_another_pixel(fake_x, x_conversion):
    fake_x.pixel_ids = frozenset({"o1a2b", "p9z8y"})
    with XConversionsClient(make_settings(fake_x.base_url)) as client:
        assert client.send([x_conversion()], pixel_id="p9z8y").ok
    assert fake_x.requests[0].pixel_id == "p9z8y"


def test_token_is_read_at_send_time(client, fake_x, x_conversion, monkeypatch):
    fake_x.set_token("rotated-token")
    assert client.send([x_conversion()]).kind == "auth"
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", "rotated-token")
    assert client.send([x_conversion()]).ok


def test_timeouts_are_explicit_and_connect_is_capped():
    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"data": {"conversions_processed": 1}})

    with mock_client(handler, timeout_seconds=30.0) as client:
        client.send([{"conversion_id": "x"}])
    with mock_client(handler, timeout_seconds=2.0, lease_seconds=10.0) as client:
        client.send([{"conversion_id": "x"}])
    assert seen[0] == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    assert seen[1]["connect"] == 2.0


# ---------------------------------------------------------------------- X said no


def test_invalid_conversion_gives_x_error_code_message_and_parameter(client, x_conversion):
    bad = x_conversion(identifiers=[{"hashed_email": "not-a-digest"}])
    result = client.send([bad])

    assert (result.kind, result.status_code) == ("invalid", 400)
    error = result.first_error
    assert isinstance(error, XError)
    assert error.code == "INVALID_PARAMETER"
    assert error.parameter == "conversions[0].identifiers[0].hashed_email"
    assert "SHA-256" in error.message
    assert "INVALID_PARAMETER" in result.describe()


def test_wrong_token_is_auth(client, fake_x, x_conversion):
    fake_x.set_token("another")
    result = client.send([x_conversion()])
    assert (result.kind, result.status_code) == ("auth", 401)
    assert result.first_error is not None and result.first_error.code == "AUTH_FAILED"


def test_missing_token_is_auth_without_any_request(client, fake_x, x_conversion, monkeypatch):
    monkeypatch.delenv("X_ADS_BEARER_TOKEN")
    result = client.send([x_conversion()])
    assert result.kind == "auth" and result.status_code is None
    assert result.detail is not None and "X_ADS_BEARER_TOKEN" in result.detail
    assert fake_x.requests == []


def test_pixel_of_another_account_is_forbidden(x_conversion):
    fake = FakeXConversionsAPI(pixel_ids=["zz999"], token=SECRET, unknown_pixel_status=403)
    with fake, XConversionsClient(make_settings(fake.start().base_url)) as client:
        result = client.send([x_conversion()])
    assert (result.kind, result.status_code) == ("forbidden", 403)


def test_unknown_event_is_not_found(fake_x, client, x_conversion):
    fake_x.event_ids = frozenset({"o87ni"})
    result = client.send([x_conversion(event_id="zzzzz")])
    assert (result.kind, result.status_code) == ("not_found", 404)


def test_redirect_is_not_followed_and_reads_as_configuration_problem():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.example/"})

    with mock_client(handler) as client:
        result = client.send([{"conversion_id": "x"}])
    assert (result.kind, result.status_code) == ("not_found", 301)
    assert result.detail is not None and "api_base_url" in result.detail


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, "server_error"),
        (503, "server_error"),
        (408, "timeout"),
        (413, "invalid"),
        (422, "invalid"),
    ],
)
def test_status_kinds(client, fake_x, x_conversion, status, kind):
    fake_x.script(status)
    result = client.send([x_conversion()])
    assert (result.kind, result.status_code) == (kind, status)
    assert fake_x.accepted == []


# ---------------------------------------------------------------------- rate limits


def test_429_carries_retry_after_and_rate_limit_headers(client, fake_x, x_conversion):
    fake_x.script(
        FakeResponse(
            429,
            headers={
                "Retry-After": "7",
                "x-rate-limit-reset": "1800000000",
                "x-account-rate-limit-reset": "1800000060",
                "x-rate-limit-remaining": "0",
                "x-account-rate-limit-remaining": "5",
            },
        )
    )
    result = client.send([x_conversion()])
    assert result.kind == "rate_limited"
    assert result.retry_after == 7.0
    assert result.rate_limit_reset == 1800000060.0  # the later reset
    assert result.rate_limit_remaining == 0  # the tighter budget


def test_429_retry_after_as_http_date(client, fake_x, x_conversion):
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    fake_x.script(FakeResponse(429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    result = client.send([x_conversion()])
    assert result.kind == "rate_limited"
    assert result.retry_after is not None and 60 < result.retry_after <= 120


def test_fake_x_rate_limit_reaches_the_result(x_conversion):
    fake = FakeXConversionsAPI(token=SECRET, rate_limit=2)
    with fake, XConversionsClient(make_settings(fake.start().base_url)) as client:
        sent = client.send([x_conversion("a"), x_conversion("b")])
        refused = client.send([x_conversion("c")])
    assert (sent.kind, sent.rate_limit_remaining) == ("ok", 0)
    assert sent.rate_limit_reset is not None
    assert refused.kind == "rate_limited" and refused.retry_after is not None
    assert refused.rate_limit_reset == sent.rate_limit_reset


def test_success_reports_remaining_budget():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"x-rate-limit-remaining": "12", "x-rate-limit-reset": "1800000000"},
            json={"data": {"conversions_processed": 1, "debug_id": "d1"}},
        )

    with mock_client(handler) as client:
        result = client.send([{"conversion_id": "x"}])
    assert (result.rate_limit_remaining, result.rate_limit_reset) == (12, 1800000000.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        (" 30 ", 30.0),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 100.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(value, expected):
    now = datetime(2015, 10, 21, 7, 26, 20, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after(value, now) == expected


# ---------------------------------------------------------------------- the network failed


def test_slow_answer_is_timeout(fake_x, x_conversion):
    fake_x.delay = 10.0  # the fake's stop() cuts the stall short
    settings = make_settings(fake_x.base_url, timeout_seconds=0.2, lease_seconds=5.0)
    with XConversionsClient(settings) as client:
        result = client.send([x_conversion()])
    assert result.kind == "timeout" and result.status_code is None
    assert result.detail is not None and "ReadTimeout" in result.detail


def test_connection_dropped_before_answer_is_ambiguous(client, fake_x, x_conversion):
    fake_x.script(FakeResponse(drop_connection=True))
    result = client.send([x_conversion()])
    assert result.kind == "ambiguous"
    assert fake_x.accepted == []


def test_connection_dropped_after_x_processed_is_ambiguous(client, fake_x, x_conversion):
    fake_x.script(FakeResponse(drop_after_read=True))
    result = client.send([x_conversion("c1")])
    assert result.kind == "ambiguous"
    # The batch did arrive: resending the same conversion_id is how X dedups it.
    assert client.send([x_conversion("c1")]).ok
    assert fake_x.accepted_ids() == {"c1": 2}


def test_unreadable_2xx_is_ambiguous(client, fake_x, x_conversion):
    fake_x.script(FakeResponse(200, malformed_body=True))
    result = client.send([x_conversion()])
    assert (result.kind, result.status_code, result.accepted) == ("ambiguous", 200, 0)
    assert result.detail is not None and "unreadable" in result.detail


@pytest.mark.parametrize(
    "body", [{"data": {"conversions_processed": 0}}, {"data": {}}, {"errors": []}, []]
)
def test_2xx_without_processed_conversions_is_ambiguous(body):
    with mock_client(lambda request: httpx.Response(200, json=body)) as client:
        result = client.send([{"conversion_id": "x"}])
    assert result.kind == "ambiguous" and not result.ok


def test_refused_connection_is_connection(x_conversion):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with XConversionsClient(make_settings(f"http://127.0.0.1:{port}")) as client:
        result = client.send([x_conversion()])
    assert result.kind == "connection" and result.status_code is None


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("[Errno -2] Name or service not known"), "connection"),
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (httpx.WriteError("broken pipe"), "connection"),
        (httpx.ReadError("connection reset"), "ambiguous"),
        (httpx.RemoteProtocolError("Server disconnected"), "ambiguous"),
    ],
)
def test_transport_errors(exc, kind):

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with mock_client(handler) as client:
        result = client.send([{"conversion_id": "x"}])
    assert result.kind == kind
    assert result.detail is not None and type(exc).__name__ in result.detail


def test_undecodable_2xx_body_is_ambiguous():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    with mock_client(handler) as client:
        result = client.send([{"conversion_id": "x"}])
    assert result.kind == "ambiguous" and "DecodingError" in (result.detail or "")


# ---------------------------------------------------------------------- misuse


@pytest.mark.parametrize("size", [0, 501])
def test_batch_size_out_of_range_is_misuse(size):
    with mock_client(lambda r: httpx.Response(200)) as client, pytest.raises(DeliveryError):
        client.send([{"conversion_id": str(i)} for i in range(size)])


def test_bad_pixel_id_is_misuse():
    with mock_client(lambda r: httpx.Response(200)) as client, pytest.raises(DeliveryError):
        client.send([{"conversion_id": "x"}], pixel_id="../admin")


# ---------------------------------------------------------------------- the token stays secret


def test_token_never_appears_in_results_reprs_logs_or_errors(x_conversion, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[object] = []
    with FakeXConversionsAPI(pixel_ids=["o1a2b"], token=SECRET) as fake:
        fake.script(
            200,
            400,
            401,
            429,
            503,
            FakeResponse(drop_connection=True),
            FakeResponse(200, malformed_body=True),
        )
        with XConversionsClient(make_settings(fake.base_url)) as client:
            seen.append(client)
            seen.extend(client.send([x_conversion()]) for _ in range(8))
        seen.extend(fake.requests)
    with XConversionsClient(make_settings("http://127.0.0.1:1")) as client:
        seen.append(client.send([x_conversion()]))
        try:
            client.send([])
        except DeliveryError as exc:
            seen.append(exc)

    kinds = {r.kind for r in seen if isinstance(r, SendResult)}
    assert kinds >= {"ok", "invalid", "auth", "rate_limited", "server_error", "ambiguous"}
    texts = [repr(o) for o in seen] + [str(o) for o in seen]
    texts += [r.describe() for r in seen if isinstance(r, SendResult)]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records, "the client logs each send at DEBUG"
    assert all(SECRET not in text for text in texts)
