"""Celery delivery on real servers: Redis broker, real worker processes, the fake X over HTTP.

Every test starts its own workers on a queue of its own and stops them; the shared store is
Redis database 1, emptied first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
WORKER_APP = "tests.scaleout.celery_worker_app"


class Cluster:
    """Worker and producer processes of one test, all on one queue."""

    def __init__(self, redis_url: str, fake_x: FakeXConversionsAPI, logs: Path) -> None:
        self.redis_url = redis_url
        self.queue = f"tltest-{uuid.uuid4().hex[:8]}"
        self.redis = redis.Redis.from_url(redis_url)
        self.logs = logs
        self.settings: dict[str, Any] = {
            "pixel_id": "o1a2b",
            "secret_key": "scaleout-tests-secret-key-0123456789",
            "events": {"purchase": "o87ni"},
            "environment": "production",
            "api_base_url": fake_x.base_url,
            "delivery": "celery",
            "celery_app": f"{WORKER_APP}:app",
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.2,
        }
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TLTEST_REDIS_URL": redis_url,
            "TLTEST_QUEUE": self.queue,
            "TLTEST_SETTINGS": json.dumps(self.settings),
        }
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_workers(self, n: int, *pool: str, app: str = WORKER_APP) -> None:
        """Start ``n`` worker processes and wait until each is ready to consume."""
        for i in range(n):
            log = open(self.logs / f"worker{len(self.workers)}.log", "wb")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", self.queue,
                 "-n", f"{self.queue}-{i}@%h", "--loglevel=WARNING", "--without-gossip",
                 "--without-mingle", "--without-heartbeat", *(pool or ("--pool=solo",))],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            ))
        if app == WORKER_APP:  # its worker_ready hook says when it consumes
            for _ in range(n):
                assert self.redis.blpop([f"{self.queue}:ready"], timeout=30), self.log_tail()

    def produce(self, *batches: list[str]) -> None:
        """Run one producer process per batch of conversion ids, all at once."""
        procs = [
            subprocess.Popen([sys.executable, "-m", "tests.scaleout.celery_producer", *ids],
                             cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
            for ids in batches
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()[-2000:]

    def engine(self) -> TrackLayer:
        """An engine of this test's settings on a plain Celery app for the same broker."""
        settings = {**self.settings, "celery_app": None, "celery_broker_url": self.redis_url}
        return TrackLayer(settings)

    def log_tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs.glob("*.log"))

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def cluster(redis_url: str, fake_x: FakeXConversionsAPI, tmp_path: Path) -> Iterator[Cluster]:
    store_url = redis_url.rsplit("/", 1)[0] + "/1"
    redis.Redis.from_url(store_url).flushdb()
    c = Cluster(store_url, fake_x, tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_many_producers_two_workers_every_conversion_reaches_x_once(
    cluster: Cluster, fake_x: FakeXConversionsAPI
) -> None:
    ids = [f"ord_{i}_purchase" for i in range(120)]
    # Four web processes; each also repeats five ids of its neighbour (a retried webhook).
    batches = [ids[k * 30:(k + 1) * 30] + ids[((k + 1) % 4) * 30:][:5] for k in range(4)]
    cluster.start_workers(2)
    cluster.produce(*batches)

    assert fake_x.wait_for(len(ids), timeout=60), cluster.log_tail()
    engine = cluster.engine()
    try:
        assert engine.flush(timeout=30), cluster.log_tail()
        assert fake_x.accepted_ids() == Counter(dict.fromkeys(ids, 1))
        assert engine.stats()["by_event"]["purchase"] == {"sent": len(ids)}
        assert cluster.redis.exists("tracklayer:ratelimit:o1a2b")  # one bucket for all workers
        trace = engine.trace("ord_7_purchase")
        assert trace is not None and "sent" in str(trace)
    finally:
        engine.close(timeout=0)


def test_worker_killed_mid_task_is_redelivered_and_sent_once(
    cluster: Cluster, fake_x: FakeXConversionsAPI
) -> None:
    ids = [f"kill_{i}_purchase" for i in range(5)]
    cluster.redis.set(f"{cluster.queue}:stall", 1)  # the first task to start blocks
    cluster.start_workers(1, "--pool=prefork", "--concurrency=1")
    cluster.produce(ids)

    stalled = cluster.redis.blpop([f"{cluster.queue}:stalled"], timeout=30)
    assert stalled, cluster.log_tail()
    os.kill(int(stalled[1]), signal.SIGKILL)  # the pool process running the task

    assert fake_x.wait_for(len(ids), timeout=60), cluster.log_tail()
    engine = cluster.engine()
    try:
        assert engine.flush(timeout=30), cluster.log_tail()
        assert fake_x.accepted_ids() == Counter(dict.fromkeys(ids, 1))
    finally:
        engine.close(timeout=0)


def test_x_outage_is_retried_by_celery_with_the_same_conversion_id(
    cluster: Cluster, fake_x: FakeXConversionsAPI, tmp_path: Path
) -> None:
    # The ready-made worker app, configured like the `tracklayer` command: only a broker URL.
    cluster.settings.update(celery_app=None, celery_broker_url=cluster.redis_url)
    (tmp_path / "tracklayer.json").write_text(json.dumps(cluster.settings))
    cluster.env.update(TRACKLAYER_CONFIG=str(tmp_path / "tracklayer.json"),
                       TLTEST_SETTINGS=json.dumps(cluster.settings))
    cluster.queue = "celery"  # the default queue of a plain app
    fake_x.fail_next(2, status=503)
    cluster.start_workers(1, app="tracklayer_middleware.delivery.celery_worker")
    cluster.produce(["retry_1_purchase"])

    assert fake_x.wait_for(1, timeout=30), cluster.log_tail()
    engine = cluster.engine()
    try:
        assert engine.flush(timeout=30)
        attempts = engine.outbox.attempts("retry_1_purchase")
        assert [a.state for a in attempts] == ["retrying", "retrying", "sent"]
        assert [a.http_status for a in attempts] == [503, 503, 200]
        assert fake_x.received_ids() == Counter({"retry_1_purchase": 3})
        assert fake_x.accepted_ids() == Counter({"retry_1_purchase": 1})
    finally:
        engine.close(timeout=0)


def test_a_429_pauses_the_pixel_for_every_worker_without_using_an_attempt(
    cluster: Cluster, fake_x: FakeXConversionsAPI
) -> None:
    fake_x.script(FakeResponse(429, headers={"Retry-After": "1"}))
    cluster.start_workers(2)
    cluster.produce(["limited_1_purchase"])

    assert fake_x.wait_for(1, timeout=30), cluster.log_tail()
    engine = cluster.engine()
    try:
        assert engine.flush(timeout=30)
        attempts = engine.outbox.attempts("limited_1_purchase")
        assert [(a.state, a.http_status) for a in attempts] == [("retrying", 429), ("sent", 200)]
        (row,) = engine.outbox.rows("limited_1_purchase")
        assert row.attempts == 1  # the 429 did not count
        assert engine.outbox.pauses() == {}  # lifted by the delivery that followed
    finally:
        engine.close(timeout=0)
