"""The Celery app the scale-out tests run real workers with.

``celery -A tests.scaleout.celery_worker_app worker ...``; producers import it too (as
``celery_app="tests.scaleout.celery_worker_app:app"``). Configured by environment:
``TLTEST_REDIS_URL`` (broker + shared store), ``TLTEST_QUEUE`` (one queue per
test), ``TLTEST_SETTINGS`` (JSON for ``TrackLayerSettings.from_mapping``).

Two test hooks, both signals so the task itself is the production one:
* on ``worker_ready`` the worker pushes its pid to ``<queue>:ready``;
* if ``<queue>:stall`` exists when a task starts, the first task to take it pushes its pid to
  ``<queue>:stalled`` and blocks (a worker busy mid-task, for the test to SIGKILL).
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery, signals

from tracklayer_middleware.delivery.celery_backend import register_task
from tracklayer_middleware.settings import TrackLayerSettings

REDIS_URL = os.environ["TLTEST_REDIS_URL"]
QUEUE = os.environ["TLTEST_QUEUE"]

app = Celery("tracklayer-tests", broker=REDIS_URL, set_as_current=True)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 60},
)
settings = TrackLayerSettings.from_mapping(json.loads(os.environ["TLTEST_SETTINGS"]))
deliver = register_task(app, settings)


@signals.worker_ready.connect
def _announce(**_: Any) -> None:
    redis.Redis.from_url(REDIS_URL).rpush(f"{QUEUE}:ready", os.getpid())


@signals.task_prerun.connect
def _stall_if_asked(**_: Any) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    if client.delete(f"{QUEUE}:stall"):
        client.rpush(f"{QUEUE}:stalled", os.getpid())
        client.blpop([f"{QUEUE}:never"], timeout=0)  # until SIGKILLed
