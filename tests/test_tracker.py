"""Tracker: validation at the call, the request queue, click context and current_tracker()."""

from __future__ import annotations

import contextvars
import logging
import threading
from datetime import datetime
from typing import Any

import pytest

from tracklayer_middleware.attribution import Attribution
from tracklayer_middleware.consent import Consent
from tracklayer_middleware.errors import ConversionError
from tracklayer_middleware.tracker import Tracker, activate, current_tracker, deactivate

CLICK = Attribution.capture("29q0w6g2k2m4a", "https://shop.test/pricing?utm_source=x")


def test_convert_validates_at_once_and_queues(make_engine: Any) -> None:
    tracker = make_engine().tracker(attribution=CLICK)
    conversion = tracker.convert(
        "purchase",
        conversion_id="ord_10492_purchase",
        value=129.95,
        currency="USD",
        email="Jane.Doe@Example.com",
        external_id="cust_10492",
    )
    assert tracker.pending == (conversion,)
    assert conversion.twclid == "29q0w6g2k2m4a" and conversion.attribution_note == "cookie"
    assert conversion.attribution_id == CLICK.attribution_id
    assert conversion.pixel_event()["params"]["conversion_id"] == "ord_10492_purchase"
    assert "jane" not in repr(tracker).lower() and "jane" not in repr(conversion).lower()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"event": "refund"}, "event"),
        ({"value": -1}, "value"),
        ({"currency": "usd"}, "currency"),
        ({"conversion_time": datetime(2026, 4, 24, 9, 42)}, "conversion_time"),
        ({"email": "not an email"}, "email"),
    ],
)
def test_bad_input_raises_and_queues_nothing(
    make_engine: Any, fields: dict[str, Any], field: str
) -> None:
    tracker = make_engine().tracker(attribution=CLICK)
    arguments = {"conversion_id": "ord_1", "value": 1, "currency": "USD", **fields}
    event = arguments.pop("event", "purchase")
    with pytest.raises(ConversionError) as raised:
        tracker.convert(event, **arguments)
    assert raised.value.field == field
    assert tracker.pending == ()


def test_same_conversion_twice_is_a_logged_no_op(make_engine: Any, caplog: Any) -> None:
    tracker = make_engine().tracker()
    first = tracker.convert("lead", conversion_id="lead_7", email="a@b.c")
    with caplog.at_level(logging.INFO, logger="tracklayer"):
        again = tracker.convert("lead", conversion_id="lead_7", email="other@b.c")
    other_event = tracker.convert("purchase", conversion_id="lead_7", email="a@b.c")
    assert again is first and tracker.pending == (first, other_event)
    assert "duplicate convert('lead', conversion_id='lead_7')" in caplog.text
    assert "other@b.c" not in caplog.text


def test_attribution_is_read_only_and_token_round_trips(make_engine: Any) -> None:
    engine = make_engine()
    tracker = engine.tracker(attribution=CLICK)
    with pytest.raises(AttributeError):
        tracker.attribution = None  # type: ignore[misc]
    token = tracker.attribution_token
    assert token is not None and "." in token and tracker.attribution_token == token
    later = engine.convert("purchase", conversion_id="ord_late", attribution=token, email="a@b.c")
    assert later.twclid == "29q0w6g2k2m4a" and later.attribution_id == CLICK.attribution_id
    assert engine.tracker().attribution_token is None


def test_consent_is_attached(make_engine: Any) -> None:
    tracker = make_engine().tracker(
        attribution=CLICK, consent=Consent(ad_storage=True, ad_user_data=False)
    )
    conversion = tracker.convert("lead", conversion_id="lead_1", email="a@b.c")
    assert tracker.consent == Consent(ad_storage=True, ad_user_data=False)
    assert conversion.initial_state == "skipped_consent" and conversion.twclid is None


def test_consent_given_at_the_call_updates_the_visitors(make_engine: Any) -> None:
    tracker = make_engine().tracker(attribution=CLICK, consent=Consent(ad_storage=True))
    refused = tracker.convert(
        "lead", conversion_id="lead_1", email="a@b.c", consent=Consent(ad_user_data=False)
    )
    assert refused.initial_state == "skipped_consent"
    assert refused.consent == Consent(ad_storage=True, ad_user_data=False)
    assert tracker.consent == Consent(ad_storage=True)


def test_another_click_cannot_be_passed_to_the_tracker(make_engine: Any) -> None:
    tracker = make_engine().tracker(attribution=CLICK)
    with pytest.raises(ConversionError, match=r"tracklayer.convert\(") as raised:
        tracker.convert("lead", conversion_id="lead_1", email="a@b.c", attribution="other")
    assert raised.value.field == "attribution" and tracker.pending == ()


def test_disabled_engine_validates_but_does_not_queue(make_engine: Any) -> None:
    tracker = make_engine(enabled=False).tracker()
    assert tracker.convert("lead", conversion_id="lead_1", email="a@b.c").event == "lead"
    assert tracker.pending == ()
    with pytest.raises(ConversionError):
        tracker.convert("nope", conversion_id="x")


def test_take_empties_the_queue_but_keeps_queueing(make_engine: Any) -> None:
    engine = make_engine()
    tracker = engine.tracker()
    first = tracker.convert("lead", conversion_id="lead_1", email="a@b.c")
    assert tracker.take() == (first,) and tracker.pending == ()
    second = tracker.convert("lead", conversion_id="lead_2", email="a@b.c")
    assert tracker.pending == (second,) and engine.outbox.rows("lead_2") == []


def test_close_returns_the_queue_and_later_converts_hand_off_at_once(make_engine: Any) -> None:
    engine = make_engine()
    tracker = engine.tracker()
    queued = tracker.convert("lead", conversion_id="lead_1", email="a@b.c")
    assert tracker.close() == (queued,) and tracker.pending == ()
    assert engine.outbox.rows("lead_1") == []  # closing hands nothing off by itself
    tracker.convert("lead", conversion_id="lead_late", email="a@b.c")
    assert len(engine.outbox.rows("lead_late")) == 1 and tracker.pending == ()


def test_current_tracker_follows_the_context(make_engine: Any) -> None:
    tracker = Tracker(make_engine(), request="the request")
    assert current_tracker() is None and tracker.request == "the request"
    token = activate(tracker)
    try:
        seen: list[Any] = []
        context = contextvars.copy_context()  # what Starlette's threadpool does
        worker = threading.Thread(
            target=context.run, args=(lambda: seen.append(current_tracker()),)
        )
        worker.start()
        worker.join()
        bare = threading.Thread(target=lambda: seen.append(current_tracker()))
        bare.start()
        bare.join()
        assert seen == [tracker, None]
    finally:
        deactivate(token)
    assert current_tracker() is None


def test_deactivate_from_another_context_is_harmless(make_engine: Any) -> None:
    tracker = make_engine().tracker()
    token = contextvars.copy_context().run(activate, tracker)
    deactivate(token)  # a WSGI server closing the response elsewhere: nothing to undo here
    assert current_tracker() is None


def test_repr_shows_no_identifiers(make_engine: Any) -> None:
    tracker = make_engine().tracker(attribution=CLICK, consent=Consent(ad_storage=True))
    tracker.convert("lead", conversion_id="lead_1", email="secret.person@example.com")
    text = repr(tracker)
    assert text == "<Tracker click=yes consent={'adStorage': 'granted'} pending=1>"
