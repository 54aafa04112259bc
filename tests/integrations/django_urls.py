"""Views for the Django integration tests: sync, async, streaming and failing ones."""

from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template import engines
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from tracklayer_middleware.tracker import current_tracker

PAGE = engines["django"].from_string(
    "{% load tracklayer %}<html><head>{% tracklayer_landing_script nonce='n0nce' %}</head>"
    "<body>{% tracklayer_pixel %}</body></html>"
)


def _convert(request: HttpRequest) -> HttpResponse:
    assert current_tracker() is request.tracker
    order = request.GET.get("order", "1")
    request.tracker.convert(
        "purchase", conversion_id=f"ord_{order}_purchase", value=129.95, currency="USD",
        email="Test@Example.com",
    )
    return HttpResponse(PAGE.render({}, request))


@csrf_exempt
def sync_view(request: HttpRequest) -> HttpResponse:
    return _convert(request)


@csrf_exempt
async def async_view(request: HttpRequest) -> HttpResponse:
    return _convert(request)


def failing_view(request: HttpRequest) -> HttpResponse:
    _convert(request)
    raise RuntimeError("the order could not be saved")


def streaming_view(request: HttpRequest) -> StreamingHttpResponse:
    request.tracker.convert("lead", conversion_id="lead_stream", email="a@example.com")

    def body() -> Iterator[bytes]:
        yield b"part one\n"
        if request.GET.get("fail"):
            raise RuntimeError("stream broke")
        yield b"part two\n"

    return StreamingHttpResponse(body())


async def async_streaming_view(request: HttpRequest) -> StreamingHttpResponse:
    which = "broken" if request.GET.get("fail") else "ok"
    request.tracker.convert("lead", conversion_id=f"lead_astream_{which}", email="a@example.com")

    async def body() -> AsyncIterator[bytes]:
        yield b"part one\n"
        if request.GET.get("fail"):
            raise RuntimeError("stream broke")
        yield b"part two\n"

    return StreamingHttpResponse(body())


def consent_from_session(request: HttpRequest) -> dict[str, str]:
    """A ``consent_resolver`` reading the CMP's answer from the session (sync-only API)."""
    return {"adStorage": request.session.get("ad_storage", "granted"), "adUserData": "granted"}


urlpatterns = [
    path("sync/", sync_view),
    path("async/", async_view),
    path("fail/", failing_view),
    path("stream/", streaming_view),
    path("astream/", async_streaming_view),
    path("shop/", include("examples.django_shop.shop.urls")),
]
