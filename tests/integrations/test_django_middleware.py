"""The Django middleware over real HTTP: WSGI (sync views) and ASGI (async views)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = pytest.mark.usefixtures("django_project")
TWCLID = "29q0w6g2k2m4a"


@pytest.fixture
def wsgi_client() -> Iterator[httpx.Client]:
    from django.core.handlers.wsgi import WSGIHandler

    transport = httpx.WSGITransport(app=WSGIHandler())
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def asgi_client() -> httpx.AsyncClient:
    from django.core.handlers.asgi import ASGIHandler

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ASGIHandler()),
                             base_url="http://testserver")


def engine():  # type: ignore[no-untyped-def]
    from tracklayer_django import get_engine

    return get_engine()


def queued() -> int:
    """How many conversions the engine holds, in any state."""
    return sum(engine().stats()["by_state"].values())


def test_landing_sets_signed_httponly_cookie(wsgi_client: httpx.Client) -> None:
    response = wsgi_client.get(f"/shop/pricing/?twclid={TWCLID}&utm_source=x")
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].strip()  # Django writes " name=value"
    assert cookie.startswith("tl_attr=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert engine().codec.loads_cookie(response.cookies["tl_attr"]).twclid == TWCLID


def test_non_paid_traffic_gets_no_cookie(wsgi_client: httpx.Client) -> None:
    response = wsgi_client.get("/shop/pricing/")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers


def test_sync_view_conversion_reaches_x_with_twclid(
    wsgi_client: httpx.Client, fake_x: FakeXConversionsAPI
) -> None:
    wsgi_client.get(f"/shop/?twclid={TWCLID}")
    response = wsgi_client.post("/sync/?order=7")
    assert response.status_code == 200
    assert '"conversion_id":"ord_7_purchase"' in response.text
    assert engine().flush(10)
    [sent] = fake_x.accepted
    assert sent["conversion_id"] == "ord_7_purchase"
    assert {"twclid": TWCLID} in sent["identifiers"]
    assert {"hashed_email": "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"} \
        in sent["identifiers"]


@pytest.mark.anyio
async def test_async_view_conversion_reaches_x(
    asgi_client: httpx.AsyncClient, fake_x: FakeXConversionsAPI
) -> None:
    async with asgi_client:
        landing = await asgi_client.get(f"/shop/?twclid={TWCLID}")
        assert landing.cookies["tl_attr"]
        response = await asgi_client.post("/async/?order=8")
    assert response.status_code == 200
    assert '"conversion_id":"ord_8_purchase"' in response.text
    assert engine().flush(10)
    assert fake_x.accepted_ids() == {"ord_8_purchase": 1}
    assert {"twclid": TWCLID} in fake_x.accepted[0]["identifiers"]


def test_template_tags_render_pixel_and_landing_script_with_nonce(
    wsgi_client: httpx.Client,
) -> None:
    html = wsgi_client.post("/sync/?order=9").text
    assert '<script nonce="n0nce">' in html
    assert "/api/tracklayer/session-attribution" in html
    pixel_call = r"twq\('event', \"tw-o1a2b-o87ni\", \{[^}]*\"conversion_id\":\"ord_9_purchase\""
    assert re.search(pixel_call, html)


def test_attribution_endpoint_answers_without_csrf_token_but_checks_origin(
    wsgi_client: httpx.Client,
) -> None:
    body = {"twclid": TWCLID, "landingUrl": "http://testserver/?twclid=x",
            "consent": {"adStorage": "granted", "adUserData": "granted"}}
    ok = wsgi_client.post("/api/tracklayer/session-attribution", json=body,
                          headers={"origin": "http://testserver"})
    assert ok.status_code == 204
    assert ok.cookies["tl_attr"]
    cross_site = wsgi_client.post("/api/tracklayer/session-attribution", json=body,
                                  headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403
    assert wsgi_client.get("/api/tracklayer/session-attribution").status_code == 405


def test_500_drops_the_conversion(wsgi_client: httpx.Client, fake_x: FakeXConversionsAPI) -> None:
    assert wsgi_client.get("/fail/").status_code == 500
    assert engine().flush(10)
    assert fake_x.requests == []
    assert queued() == 0


def test_streaming_response_hands_off_after_the_last_chunk(
    wsgi_client: httpx.Client, fake_x: FakeXConversionsAPI
) -> None:
    wsgi_client.get(f"/shop/?twclid={TWCLID}")
    with wsgi_client.stream("GET", "/stream/") as response:
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"part one")
        assert queued() == 0  # nothing handed off mid-stream
        assert b"".join(chunks) == b"part two\n"
    assert engine().flush(10)
    assert fake_x.accepted_ids() == {"lead_stream": 1}


def test_stream_broken_part_way_drops_the_conversion(wsgi_client: httpx.Client) -> None:
    with pytest.raises(RuntimeError, match="stream broke"):
        wsgi_client.get(f"/stream/?fail=1&twclid={TWCLID}")
    assert queued() == 0


def test_django_test_client_closes_responses_so_hand_off_happens(
    fake_x: FakeXConversionsAPI,
) -> None:
    from django.test import Client

    assert Client().post("/sync/?order=11").status_code == 200
    assert engine().flush(10)
    assert fake_x.accepted_ids() == {"ord_11_purchase": 1}


def test_manage_py_tracklayer_status_runs_on_the_site_engine() -> None:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("tracklayer", "status", "--json", stdout=out)
    assert '"by_state"' in out.getvalue()
    with pytest.raises(SystemExit) as usage:
        call_command("tracklayer", "no-such-command", stdout=io.StringIO(),
                     stderr=io.StringIO())
    assert usage.value.code == 2


@pytest.mark.anyio
async def test_async_stack_calls_a_dotted_path_consent_resolver(
    asgi_client: httpx.AsyncClient,
) -> None:
    from django.conf import settings
    from django.test.utils import override_settings

    tracklayer = {**settings.TRACKLAYER, "consent_required": True,
                  "consent_resolver": "tests.integrations.django_urls.consent_from_session"}
    with override_settings(TRACKLAYER=tracklayer):
        async with asgi_client:
            landing = await asgi_client.get(f"/shop/?twclid={TWCLID}")
        assert engine().settings.consent_required
    # Unknown consent would store nothing: the resolver's grant (read from the session) did.
    assert "tl_attr" in landing.cookies


def test_nonce_comes_from_request_csp_nonce() -> None:
    from django.template import engines
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.csp_nonce = 'abc"def'  # type: ignore[attr-defined]
    html = engines["django"].from_string(
        "{% load tracklayer %}{% tracklayer_landing_script %}"
    ).render({"request": request})
    assert html.startswith('<script nonce="abc&quot;def">')


def test_missing_settings_fail_the_middleware_with_the_fix() -> None:
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    from tracklayer_middleware.errors import ConfigurationError

    with override_settings():
        del settings.TRACKLAYER
        with pytest.raises(ConfigurationError, match=r"settings.TRACKLAYER must be a dict"):
            WSGIHandler()


def test_file_response_keeps_sendfile_and_hands_off_at_close(
    fake_x: FakeXConversionsAPI,
) -> None:
    import io

    from django.http import FileResponse, HttpRequest
    from django.test import RequestFactory
    from tracklayer_django.middleware import TrackLayerMiddleware

    def view(request: HttpRequest) -> FileResponse:
        request.tracker.convert("lead", conversion_id="lead_file", email="a@example.com")  # type: ignore[attr-defined]
        return FileResponse(io.BytesIO(b"invoice"), filename="invoice.txt")

    response = TrackLayerMiddleware(view)(RequestFactory().get(f"/?twclid={TWCLID}"))
    assert response.file_to_stream is not None  # the WSGI server may still use sendfile
    assert b"".join(response) == b"invoice"
    assert queued() == 0
    response.close()
    assert engine().flush(10)
    assert fake_x.accepted_ids() == {"lead_file": 1}


@pytest.mark.anyio
async def test_async_streaming_response_hands_off_after_its_end_only(
    asgi_client: httpx.AsyncClient, fake_x: FakeXConversionsAPI
) -> None:
    async with asgi_client:
        ok = await asgi_client.get("/astream/")
        assert ok.text == "part one\npart two\n"
        with pytest.raises(RuntimeError, match="stream broke"):
            await asgi_client.get("/astream/?fail=1")
    assert engine().flush(10)
    assert fake_x.accepted_ids() == {"lead_astream_ok": 1}  # the broken stream's was dropped
