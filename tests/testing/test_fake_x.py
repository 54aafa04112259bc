"""The fake X validates like X's documentation, records what it got, and follows its script."""

from __future__ import annotations

import threading

import httpx
import pytest

from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI
from tracklayer_middleware.testing.x_rules import check_body

DIGEST = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"


TOKEN = "test-token-not-a-secret"  # what the fake_x fixture expects


def post(fake: FakeXConversionsAPI, body: object, *, pixel: str = "o1a2b", token: str = TOKEN):
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(fake.url(pixel), json=body, headers=headers, timeout=5)


# ---------------------------------------------------------------------- X's rules, pure


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"event_id": "tw-o1a2b-o87ni"},
        {"identifiers": [{"hashed_email": DIGEST}, {"hashed_phone_number": DIGEST}]},
        {"identifiers": [{"twclid": "abc"}, {"ip_address": "2001:db8::1", "user_agent": "UA"}]},
        {"identifiers": [{"twclid": "abc", "external_id": "cust_1"}]},
        {"number_items": 2, "description": "two things", "value": 0},
        {"contents": [{"content_id": "sku1", "content_price": 9.5, "num_items": 1}]},
    ],
)
def test_valid_conversions(x_conversion, overrides):
    assert check_body({"conversions": [x_conversion(**overrides)]}, "o1a2b") is None


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"conversion_time": "2026-04-24T09:42:13Z"}, "conversion_time"),  # no millis
        ({"conversion_time": "2026-04-24T09:42:13.000+00:00"}, "conversion_time"),
        ({"conversion_time": "2026-02-30T09:42:13.000Z"}, "conversion_time"),
        ({"event_id": "tw-zz999-o87ni"}, "event_id"),  # another pixel's event
        ({"event_id": "bad id"}, "event_id"),
        ({"identifiers": []}, "identifiers"),
        ({"identifiers": [{}]}, "identifiers[0]"),
        ({"identifiers": [{"email": "a@b.c"}]}, "identifiers[0].email"),
        ({"identifiers": [{"hashed_email": DIGEST.upper()}]}, "identifiers[0].hashed_email"),
        ({"identifiers": [{"hashed_phone_number": "+11234567890"}]}, "hashed_phone_number"),
        ({"identifiers": [{"ip_address": "1.2.3.4", "user_agent": "UA"}]}, "identifiers"),
        ({"identifiers": [{"external_id": "cust_1"}]}, "identifiers"),
        ({"identifiers": [{"twclid": "a", "ip_address": "999.1.1.1"}]}, "ip_address"),
        ({"conversion_id": ""}, "conversion_id"),
        ({"value": "129.95"}, "value"),
        ({"value": True}, "value"),
        ({"price_currency": "usd"}, "price_currency"),
        ({"number_items": 0}, "number_items"),
        ({"contents": [{"sku": "x"}]}, "contents[0].sku"),
        ({"contents": [{"num_items": 1.5}]}, "contents[0].num_items"),
        ({"email": "a@b.c"}, "email"),  # unknown field on a conversion
    ],
)
def test_invalid_conversions(x_conversion, overrides, parameter):
    problem = check_body({"conversions": [x_conversion(), x_conversion(**overrides)]}, "o1a2b")
    assert problem is not None and problem.code == "INVALID_PARAMETER"
    assert problem.parameter.startswith("conversions[1].")
    assert problem.parameter.endswith(parameter)


@pytest.mark.parametrize("field", ["conversion_time", "event_id", "identifiers"])
def test_required_fields(x_conversion, field):
    item = x_conversion()
    del item[field]
    problem = check_body({"conversions": [item]}, "o1a2b")
    assert problem is not None and problem.parameter == f"conversions[0].{field}"


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ([], "body"),
        ({}, "conversions"),
        ({"conversions": []}, "conversions"),
        ({"conversions": {}}, "conversions"),
        ({"conversions": [1]}, "conversions[0]"),
        ({"conversions": [], "test_event_code": "x"}, "test_event_code"),
    ],
)
def test_invalid_bodies(body, parameter):
    problem = check_body(body, "o1a2b")
    assert problem is not None and problem.parameter == parameter


def test_over_500_conversions_is_refused(x_conversion):
    problem = check_body({"conversions": [x_conversion(str(i)) for i in range(501)]}, "o1a2b")
    assert problem is not None and "500" in problem.message
    assert check_body({"conversions": [x_conversion(str(i)) for i in range(500)]}, "o1a2b") is None


# ---------------------------------------------------------------------- over HTTP


def test_success_answer_and_records(fake_x, x_conversion):
    response = post(fake_x, {"conversions": [x_conversion("a"), x_conversion("b")]})

    assert response.status_code == 200
    body = response.json()
    assert body["data"]["conversions_processed"] == 2 and body["data"]["debug_id"]
    assert body["request"]["params"]["account_id"]
    assert [c["conversion_id"] for c in fake_x.accepted] == ["a", "b"]
    (request,) = fake_x.requests
    assert (request.method, request.pixel_id, request.status) == ("POST", "o1a2b", 200)
    assert request.conversions() == fake_x.accepted
    assert "test-token" not in repr(request)
    assert request.redacted_headers()["authorization"] == "***"


def test_one_bad_conversion_fails_the_whole_batch(fake_x, x_conversion):
    bad = x_conversion("bad", price_currency="dollars")
    response = post(fake_x, {"conversions": [x_conversion("good"), bad]})

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == "INVALID_PARAMETER"
    assert error["parameter"] == "conversions[1].price_currency"
    assert fake_x.accepted == []
    assert fake_x.received_ids() == {"good": 1, "bad": 1}


def test_not_json_is_400(fake_x):
    response = httpx.post(
        fake_x.url("o1a2b"),
        content=b"{nope",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_is_401(fake_x, x_conversion, token):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = httpx.post(
        fake_x.url("o1a2b"), json={"conversions": [x_conversion()]}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "AUTH_FAILED"


def test_token_rotation(fake_x, x_conversion):
    fake_x.set_token("new-token")
    assert post(fake_x, {"conversions": [x_conversion()]}, token="test-token").status_code == 401
    assert post(fake_x, {"conversions": [x_conversion()]}, token="new-token").status_code == 200


def test_unknown_pixel_is_404_or_403_as_configured(fake_x, x_conversion):
    assert post(fake_x, {"conversions": [x_conversion()]}, pixel="zz999").status_code == 404
    fake_x.unknown_pixel_status = 403
    assert post(fake_x, {"conversions": [x_conversion()]}, pixel="zz999").status_code == 403


def test_unknown_event_is_404(fake_x, x_conversion):
    fake_x.event_ids = frozenset({"o87ni"})
    assert post(fake_x, {"conversions": [x_conversion(event_id="tw-o1a2b-o87ni")]}).is_success
    response = post(fake_x, {"conversions": [x_conversion(event_id="zzzzz")]})
    assert response.status_code == 404 and response.json()["errors"][0]["parameter"] == "event_id"


def test_wrong_path_version_or_method_is_404(fake_x):
    base = fake_x.base_url
    assert httpx.post(f"{base}/11/measurement/conversions/o1a2b", json={}).status_code == 404
    assert httpx.post(f"{base}/12/measurement/whatever", json={}).status_code == 404
    assert httpx.get(fake_x.url("o1a2b")).status_code == 404


# ---------------------------------------------------------------------- scripting


def test_script_answers_in_order_then_goes_back_to_normal(fake_x, x_conversion):
    fake_x.script(503, FakeResponse(429, headers={"Retry-After": "3"}))
    body = {"conversions": [x_conversion()]}

    first, second, third = (post(fake_x, body) for _ in range(3))
    assert first.status_code == 503
    assert first.json()["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
    assert (second.status_code, second.headers["retry-after"]) == (429, "3")
    assert third.status_code == 200
    assert len(fake_x.accepted) == 1
    assert [r.status for r in fake_x.requests] == [503, 429, 200]


def test_scripted_answers_apply_before_validation(fake_x):
    fake_x.fail_next(2, status=500)
    assert post(fake_x, {"not": "valid"}).status_code == 500
    assert post(fake_x, {"not": "valid"}).status_code == 500
    assert post(fake_x, {"not": "valid"}).status_code == 400


def test_scripted_body_and_malformed_body(fake_x, x_conversion):
    fake_x.script(
        FakeResponse(400, body={"errors": [{"code": "X", "message": "m", "parameter": "p"}]}),
        FakeResponse(200, malformed_body=True),
    )
    body = {"conversions": [x_conversion()]}
    assert post(fake_x, body).json()["errors"][0]["code"] == "X"
    garbage = post(fake_x, body)
    assert garbage.status_code == 200 and b"<html>" in garbage.content
    # X processed the second one even though its answer was garbage.
    assert len(fake_x.accepted) == 1


def test_drop_connection_and_drop_after_read(fake_x, x_conversion):
    fake_x.script(FakeResponse(drop_connection=True), FakeResponse(drop_after_read=True))
    body = {"conversions": [x_conversion("c1")]}
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            post(fake_x, body)
    assert fake_x.accepted_ids() == {"c1": 1}  # only drop_after_read processed it
    assert [r.status for r in fake_x.requests] == [None, None]


def test_delay_is_cut_short_by_stop(x_conversion):
    fake = FakeXConversionsAPI(token=None).start()
    fake.delay = 30.0
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(fake.url("o1a2b"), json={}, timeout=60))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.stop()
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert isinstance(outcome[0], httpx.HTTPError)


def test_wait_for_and_reset(fake_x, x_conversion):
    assert fake_x.wait_for(1, timeout=0) is False
    sender = threading.Thread(target=post, args=(fake_x, {"conversions": [x_conversion()]}))
    sender.start()
    assert fake_x.wait_for(1, timeout=10)
    assert fake_x.wait_for_requests(1, timeout=10)
    sender.join()
    fake_x.script(503)
    fake_x.delay = 1.0
    fake_x.reset()
    assert (fake_x.requests, fake_x.accepted, fake_x.delay) == ([], [], None)
    assert post(fake_x, {"conversions": [x_conversion()]}).status_code == 200


def test_lifecycle_and_repr():
    fake = FakeXConversionsAPI(pixel_ids=None, token=None)
    with pytest.raises(RuntimeError, match="start"):
        fake.base_url  # noqa: B018
    assert "stopped" in repr(fake)
    with fake:
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert fake.start() is fake  # idempotent
        assert httpx.post(fake.url("anypixel"), json={"conversions": []}).status_code == 400
    fake.stop()  # idempotent
    assert fake.bugs == []


def test_gate_holds_a_request_in_flight_until_released(fake_x, x_conversion):
    gate = threading.Event()
    fake_x.script(FakeResponse(gate=gate))
    answers: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answers.append(post(fake_x, {"conversions": [x_conversion()]}))
    )
    sender.start()
    assert fake_x.wait_for_arrivals(1, timeout=10)
    assert fake_x.requests == [] and fake_x.accepted == []  # still in flight
    gate.set()
    sender.join(timeout=10)
    assert [a.status_code for a in answers] == [200]
    assert len(fake_x.accepted) == 1


def test_stop_releases_a_held_request_by_dropping_it(x_conversion):
    fake = FakeXConversionsAPI(token=None).start()
    fake.script(FakeResponse(gate=threading.Event()))
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(fake.url("o1a2b"), json={"conversions": [x_conversion()]}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert fake.wait_for_arrivals(1, timeout=10)
    fake.stop()
    caller.join(timeout=10)
    assert isinstance(outcome[0], httpx.RemoteProtocolError)
    assert fake.accepted == []


def test_rate_limit_budget_headers_and_429(x_conversion):
    with FakeXConversionsAPI(token=None, rate_limit=3) as fake:

        def send(n: int) -> httpx.Response:
            body = {"conversions": [x_conversion(str(i)) for i in range(n)]}
            return httpx.post(fake.url("o1a2b"), json=body)

        first, refused, last = send(2), send(2), send(1)
    assert first.status_code == 200
    assert first.headers["x-rate-limit-limit"] == "3"
    assert first.headers["x-rate-limit-remaining"] == "1"
    assert int(first.headers["x-rate-limit-reset"]) > 0
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert 1 <= int(refused.headers["retry-after"]) <= 901
    assert (last.status_code, last.headers["x-rate-limit-remaining"]) == (200, "0")
    assert len(fake.accepted) == 3
