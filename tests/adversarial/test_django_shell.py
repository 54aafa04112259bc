"""Hostile inputs through Django (its own middleware and endpoint answer over the shared
gateway), sync over WSGI and async over ASGI. Uses the integration tests' Django project.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.adversarial.conftest import Observed, attribution_cookie
from tests.integrations.django_fixture import django_project  # noqa: F401 - a fixture

pytestmark = [pytest.mark.adversarial_input, pytest.mark.usefixtures("django_project")]

ENDPOINT = "/api/tracklayer/session-attribution"
GOOD = {"twclid": "29q0w6g2k2m4a", "consent": {"adStorage": "granted", "adUserData": "granted"}}


class DjangoShop:
    """Django's WSGI and ASGI handlers; every status goes to ``observed``."""

    def __init__(self, observed: Observed) -> None:
        from django.core.handlers.asgi import ASGIHandler
        from django.core.handlers.wsgi import WSGIHandler

        self.observed = observed
        self.wsgi = httpx.Client(transport=httpx.WSGITransport(app=WSGIHandler()),
                                 base_url="http://testserver")
        self.asgi_app = ASGIHandler()

    def request(self, method: str, url: str, **kwargs: Any) -> list[httpx.Response]:
        """The same request through WSGI and through ASGI."""
        responses = [self.wsgi.request(method, url, **kwargs)]

        async def over_asgi() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.asgi_app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://testserver") as client:
                return await client.request(method, url, **kwargs)

        responses.append(anyio.run(over_asgi))
        for response in responses:
            self.observed.status(response.status_code)
        return responses


@pytest.fixture
def django_shop(observed: Observed) -> Iterator[DjangoShop]:
    shop = DjangoShop(observed)
    yield shop
    shop.wsgi.close()


def test_django_tampered_and_non_utf8_cookies(django_shop: DjangoShop) -> None:
    for cookie in ("tl_attr=eyJ2Ijox.x.y", "tl_attr=%FF%FE; tl_attr=\"\\x00\"", "tl_attr="):
        for response in django_shop.request("GET", "/sync/", headers={"cookie": cookie}):
            assert response.status_code == 200 and attribution_cookie(response) is None


def test_django_crlf_and_overlong_twclid(django_shop: DjangoShop) -> None:
    for query in ("twclid=a%0d%0aSet-Cookie:%20x=1", "twclid=" + "a" * 129, "twclid=%FF"):
        for response in django_shop.request("GET", f"/sync/?{query}&order=x{len(query)}"):
            assert response.status_code == 200 and attribution_cookie(response) is None


def test_django_huge_report(django_shop: DjangoShop) -> None:
    body = json.dumps({**GOOD, "pad": "x" * 9000})
    for response in django_shop.request(
        "POST", ENDPOINT, content=body,
        headers={"origin": "http://testserver", "content-type": "application/json"},
    ):
        assert response.status_code == 413 and attribution_cookie(response) is None


def test_django_bad_json_and_wrong_types(django_shop: DjangoShop) -> None:
    headers = {"origin": "http://testserver", "content-type": "application/json"}
    for body in (b"{nope", b"[" * 3000 + b"]" * 3000, json.dumps({**GOOD, "twclid": 5}).encode()):
        for response in django_shop.request("POST", ENDPOINT, content=body, headers=headers):
            assert response.status_code == 400 and attribution_cookie(response) is None


def test_django_foreign_or_missing_origin(django_shop: DjangoShop) -> None:
    for headers in ({"origin": "https://evil.example"}, {"origin": "null"}, {}):
        headers = {**headers, "content-type": "application/json"}
        for response in django_shop.request("POST", ENDPOINT, json=GOOD, headers=headers):
            assert response.status_code == 403 and attribution_cookie(response) is None


def test_django_wrong_method_and_content_type(django_shop: DjangoShop) -> None:
    for response in django_shop.request("GET", ENDPOINT):
        assert response.status_code == 405
    for response in django_shop.request(
        "POST", ENDPOINT, content=json.dumps(GOOD),
        headers={"origin": "http://testserver", "content-type": "text/plain"},
    ):
        assert response.status_code in (400, 415)
