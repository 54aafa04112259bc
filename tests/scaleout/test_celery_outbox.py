"""The web-process side of Celery delivery, on a real Redis without workers: what is recorded
in the shared store and what is published to the broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from tracklayer_middleware.consent import Consent
from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.delivery.celery_backend import CeleryOutbox, store_for
from tracklayer_middleware.delivery.outbox import PAUSE_RATE_LIMIT, PixelPause, State
from tracklayer_middleware.errors import ConfigurationError, OutboxError
from tracklayer_middleware.settings import TrackLayerSettings

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]


@pytest.fixture
def store_url(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + "/2"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def settings(store_url: str) -> TrackLayerSettings:
    return TrackLayerSettings.from_mapping({
        "pixel_id": "o1a2b", "secret_key": "scaleout-tests-secret-key-0123456789",
        "events": {"purchase": "o87ni"}, "delivery": "celery", "celery_broker_url": store_url,
        "batch_size": 2,
    })


@pytest.fixture
def queue() -> str:
    return f"tltest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def outbox(settings: TrackLayerSettings, store_url: str, queue: str) -> Iterator[CeleryOutbox]:
    app = Celery("tl-test", broker=store_url, set_as_current=False)
    app.conf.task_default_queue = queue
    box = CeleryOutbox(settings, app=app)
    yield box
    box.close()


def conv(settings: TrackLayerSettings, cid: str, **kwargs: Any) -> Conversion:
    return build_conversion(settings, "purchase", conversion_id=cid, email=f"{cid}@example.com",
                            **kwargs)


def published(store_url: str, queue: str) -> int:
    return int(redis.Redis.from_url(store_url).llen(queue))


def test_enqueue_is_idempotent_and_batches_per_task(
    outbox: CeleryOutbox, settings: TrackLayerSettings, store_url: str, queue: str
) -> None:
    now = time.time()
    first = [conv(settings, f"o{i}") for i in range(5)]
    assert outbox.enqueue(first, now=now) == [True] * 5
    assert published(store_url, queue) == 3  # batch_size 2: 2 + 2 + 1
    again = [conv(settings, "o1"), conv(settings, "o9")]
    assert outbox.enqueue(again, now=now) == [False, True]
    assert published(store_url, queue) == 4
    assert outbox.counts() == {"purchase": {"pending": 6}}
    assert outbox.unfinished(now) == (6, now)
    assert outbox.oldest_unfinished() == now


def test_skipped_conversions_are_recorded_but_never_published(
    outbox: CeleryOutbox, settings: TrackLayerSettings, store_url: str, queue: str
) -> None:
    denied = conv(settings, "c1", consent=Consent(ad_user_data=False))
    assert outbox.enqueue([denied], now=time.time()) == [True]
    assert published(store_url, queue) == 0
    (row,) = outbox.rows("c1")
    assert row.state == State.SKIPPED_CONSENT
    assert row.record["hashed_email"] is None  # consent denied: identifiers dropped
    assert outbox.unfinished(time.time())[0] == 0


def test_what_the_task_carries_is_hashed(
    outbox: CeleryOutbox, settings: TrackLayerSettings, store_url: str, queue: str
) -> None:
    outbox.enqueue([conv(settings, "pii_1")], now=time.time())
    message = redis.Redis.from_url(store_url).lindex(queue, 0)
    assert message is not None and b"pii_1@example.com" not in message
    (row,) = outbox.rows("pii_1")
    assert row.record["hashed_email"] == conv(settings, "pii_1").hashed_email


def test_a_failed_publish_leaves_nothing_behind(
    settings: TrackLayerSettings, store_url: str, outbox: CeleryOutbox
) -> None:
    dead_broker = Celery("tl-test", broker="redis://127.0.0.1:1/0", set_as_current=False)
    dead_broker.conf.update(task_publish_retry=False, broker_connection_timeout=1,
                            broker_connection_retry=False)
    broken = CeleryOutbox(settings, app=dead_broker, store=outbox.store)
    with pytest.raises(OutboxError, match="could not publish"):
        broken.enqueue([conv(settings, "lost_1")], now=time.time())
    assert outbox.rows("lost_1") == []
    assert outbox.counts() == {}
    assert outbox.enqueue([conv(settings, "lost_1")], now=time.time()) == [True]


def test_retry_dead_gives_a_fresh_budget_and_a_new_task(
    outbox: CeleryOutbox, settings: TrackLayerSettings, store_url: str, queue: str
) -> None:
    outbox.enqueue([conv(settings, "d1"), conv(settings, "d2")], now=time.time())
    store = outbox.store
    for cid in ("d1", "d2"):
        key = store.conversion_key("o1a2b", "o87ni", cid)
        assert store.update(key, {"state": State.DEAD, "attempts": 12})
    assert outbox.find(states=[State.DEAD]) != []
    assert outbox.retry_dead(now=time.time(), conversion_ids=["d2"]) == 1
    states = {r.conversion_id: (r.state, r.attempts) for r in outbox.find()}
    assert states == {"d1": (State.DEAD, 12), "d2": (State.PENDING, 0)}
    assert published(store_url, queue) == 2


def test_pauses_are_shared_and_resume_releases_paused_rows(
    outbox: CeleryOutbox, settings: TrackLayerSettings
) -> None:
    now = time.time()
    outbox.enqueue([conv(settings, "p1")], now=now)
    outbox.store.update(outbox.store.conversion_key("o1a2b", "o87ni", "p1"),
                        {"state": State.PAUSED})
    pause = PixelPause("o1a2b", PAUSE_RATE_LIMIT, "429", until=now + 60, since=now)
    outbox.pause(pause, now=now)
    assert outbox.pauses() == {"o1a2b": pause}
    assert outbox.resume("o1a2b", now=now) == 1
    assert outbox.pauses() == {}
    assert [r.state for r in outbox.rows("p1")] == [State.PENDING]


def test_the_shared_store_must_be_redis() -> None:
    app = Celery("tl-test", broker="amqp://guest@127.0.0.1//", set_as_current=False)
    settings = TrackLayerSettings.from_mapping({
        "pixel_id": "o1a2b", "secret_key": "scaleout-tests-secret-key-0123456789",
        "delivery": "celery", "celery_broker_url": "amqp://guest@127.0.0.1//",
    })
    with pytest.raises(ConfigurationError, match="redis:// broker"):
        store_for(settings, app)


def test_a_conversion_whose_task_never_reached_the_broker_is_taken_over(
    outbox: CeleryOutbox, settings: TrackLayerSettings, store_url: str, queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broker_gone(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker gone")

    # The enqueuer recorded the conversion, then died before publishing (no clean-up ran).
    monkeypatch.setattr(outbox.app, "send_task", broker_gone)
    monkeypatch.setattr(outbox.store, "forget", lambda *args: None)
    with pytest.raises(OutboxError):
        outbox.enqueue([conv(settings, "ghost_1")], now=time.time())
    monkeypatch.undo()

    assert outbox.enqueue([conv(settings, "ghost_1")], now=time.time()) == [True]
    assert published(store_url, queue) == 1
    assert outbox.enqueue([conv(settings, "ghost_1")], now=time.time()) == [False]
    assert outbox.counts() == {"purchase": {"pending": 1}}
