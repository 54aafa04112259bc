"""Scenarios the Django outbox tests run in fresh processes (Django is configured once per
process, and these need their own database and settings).

``python -m tests.scaleout.djangoproj.scenarios NAME [ARGS]``; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.scaleout.djangoproj.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from tracklayer_django.conf import conf  # noqa: E402
from tracklayer_django.engine import get_engine  # noqa: E402
from tracklayer_django.models import OutboxEntry  # noqa: E402
from tracklayer_django.outbox import DjangoOutbox  # noqa: E402

from tests.scaleout.djangoproj.shop.models import Order  # noqa: E402
from tracklayer_middleware.consent import Consent  # noqa: E402
from tracklayer_middleware.conversion import build_conversion  # noqa: E402
from tracklayer_middleware.delivery.log import DeliveryLogEntry  # noqa: E402
from tracklayer_middleware.delivery.outbox import PAUSE_AUTH, PixelPause, RowUpdate  # noqa: E402
from tracklayer_middleware.errors import OutboxError  # noqa: E402


class RolledBack(Exception):
    pass


def migrate() -> dict[str, Any]:
    call_command("migrate", verbosity=0)
    return {"ok": True}


def order(number: str, *, fail: bool) -> None:
    """The host's checkout: the order and its conversion in one transaction."""
    try:
        with transaction.atomic():
            Order.objects.create(number=number)
            get_engine().convert("purchase", conversion_id=f"{number}_purchase", value=42.0,
                                 currency="USD", email=f"{number}@example.com")
            if fail:
                raise RolledBack  # e.g. the payment was declined after convert()
    except RolledBack:
        pass


def checkout() -> dict[str, Any]:
    """One order rolled back, one committed; the engine's sender delivers what committed."""
    engine = get_engine()
    commits: list[str] = []
    assert isinstance(engine.outbox, DjangoOutbox)
    engine.outbox.add_commit_listener(lambda: commits.append("commit"))
    order("A1", fail=True)
    woken_by_rollback = len(commits)
    order("B2", fail=False)
    drained = engine.flush(timeout=20)
    return {
        "wakes": [woken_by_rollback, len(commits)],
        "orders": sorted(Order.objects.values_list("number", flat=True)),
        "rows": sorted(OutboxEntry.objects.values_list("conversion_id", "state")),
        "drained": drained,
    }


def _enqueue(prefix: str, n: int) -> None:
    """Rows straight into the outbox, with no engine (so no sender takes them)."""
    settings = conf.build()
    DjangoOutbox().enqueue(
        [build_conversion(settings, "purchase", conversion_id=f"{prefix}_{i}",
                          email=f"{prefix}{i}@example.com") for i in range(n)],
        now=time.time(),
    )


def seed(n: str) -> dict[str, Any]:
    _enqueue("seed", int(n))
    return {"rows": OutboxEntry.objects.count()}


def claim(limit: str) -> dict[str, Any]:
    """One of several concurrent claimers: say ready, wait for 'go', claim until empty."""
    outbox = DjangoOutbox()
    OutboxEntry.objects.exists()  # connect before the start line, not after
    print("ready", flush=True)
    sys.stdin.readline()
    claimed: list[str] = []
    claims = 0
    while True:
        _, rows = outbox.claim(int(limit), lease_seconds=300, now=time.time())
        if not rows:
            break
        claims += 1
        claimed.extend(r.conversion_id for r in rows)
    return {"claimed": claimed, "claims": claims}


def drain() -> dict[str, Any]:
    """One of several web processes whose background senders share the outbox table."""
    engine = get_engine()
    OutboxEntry.objects.exists()
    print("ready", flush=True)
    sys.stdin.readline()
    drained = engine.flush(timeout=60)
    engine.close(timeout=5)
    return {"drained": drained}


def reconnect() -> dict[str, Any]:
    """The database drops the sender's connection: one call fails, the next reconnects."""
    import psycopg
    from django.db import connection

    outbox = DjangoOutbox()
    outbox.counts()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    with psycopg.connect(os.environ["TLTEST_DATABASE"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    try:
        outbox.counts()
        first = "ok"
    except OutboxError as exc:
        first = str(exc)
    return {"first": first, "then": outbox.counts()}


def admin_retry() -> dict[str, Any]:
    """The admin lists dead rows by state and retries them with the "retry" action."""
    from django.contrib.auth.models import User
    from django.test import Client

    _enqueue("dead", 2)
    OutboxEntry.objects.update(state="dead", attempts=12)
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    listing = client.get("/admin/tracklayer_django/outboxentry/?state__exact=dead&event=purchase")
    ids = list(OutboxEntry.objects.values_list("pk", flat=True))
    done = client.post(
        "/admin/tracklayer_django/outboxentry/",
        {"action": "retry", "_selected_action": ids},
        follow=True,
    )
    return {
        "listing": listing.status_code,
        "listed": [f"dead_{i}" in listing.content.decode() for i in range(2)],
        "action": done.status_code,
        "page": done.content.decode(),
        "states": sorted(OutboxEntry.objects.values_list("state", "attempts")),
    }


def _protocol_script(outbox: Any) -> list[Any]:
    """Every Outbox method in one story; the results, without backend-specific ids."""
    settings = conf.build()
    make = [
        build_conversion(settings, "purchase", conversion_id=f"p{i}", email=f"p{i}@example.com")
        for i in range(3)
    ] + [build_conversion(settings, "purchase", conversion_id="skip",
                          consent=Consent(ad_user_data=False))]
    out: list[Any] = [outbox.enqueue(make, now=1000.0), outbox.enqueue(make[:1], now=1000.0)]

    def claim(limit: int, now: float) -> tuple[str, dict[str, int]]:
        owner, rows = outbox.claim(limit, lease_seconds=100, now=now)
        out.append(sorted((r.conversion_id, r.attempts) for r in rows))  # state: pre- or post-claim
        return owner, {r.conversion_id: r.id for r in rows}

    def entry(cid: str, state: str, attempt: int, status: int) -> DeliveryLogEntry:
        return DeliveryLogEntry(cid, "purchase", "o1a2b", attempt, state, 1000.0, 1000.5,
                                http_status=status, identifiers=("hashed_email",))

    owner, ids = claim(2, 1000.0)
    out += [outbox.unfinished(1000.0), outbox.next_due(1000.0)]
    first, second = sorted(ids)
    out.append(outbox.finish([
        RowUpdate(ids[first], owner, "sent", 1, first_attempt_at=1000.0, status=200),
        RowUpdate(ids[second], owner, "retrying", 1, first_attempt_at=1000.0,
                  next_attempt_at=1050.0, status=503, code="SERVICE_UNAVAILABLE"),
        RowUpdate(ids[second], "someone-else", "dead", 9),  # a stale lease changes nothing
    ], [entry(first, "sent", 1, 200), entry(second, "retrying", 1, 503)], now=1000.5))
    claim(10, 1001.0)
    outbox.pause(PixelPause("o1a2b", PAUSE_AUTH, "401", until=2000.0, since=1001.0),
                 now=1001.0)
    claim(10, 1100.0)
    out += [outbox.counts(), outbox.pauses(), outbox.oldest_unfinished(),
            outbox.last_errors(), outbox.unfinished(1100.0), outbox.next_due(1100.0)]
    out.append(outbox.resume("o1a2b", now=1100.0))
    owner, ids = claim(10, 1100.0)
    out.append(outbox.finish(
        [RowUpdate(i, owner, "dead", 12, status=400, code="INVALID") for i in ids.values()],
        [], now=1101.0))
    out.append(outbox.retry_dead(now=1200.0, conversion_ids=[second]))
    out.append([(r.conversion_id, r.state) for r in outbox.find(states=["pending", "dead"])])
    out.append(outbox.purge(done_before=5000.0))
    out.append([(r.conversion_id, r.state, r.attempts, r.last_status) for r in outbox.rows(second)])
    out += [outbox.attempts(second), outbox.attempts(first), outbox.counts()]
    return out


def parity(path: str) -> dict[str, Any]:
    """The Django outbox answers the protocol exactly like the SQLite outbox."""
    from tracklayer_middleware.delivery.sqlite_outbox import SQLiteOutbox

    django_side = _protocol_script(DjangoOutbox())
    sqlite_side = _protocol_script(SQLiteOutbox(path))
    return {"django": [repr(x) for x in django_side], "sqlite": [repr(x) for x in sqlite_side]}


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    scenarios = {f.__name__: f for f in (migrate, checkout, seed, claim, drain, parity,
                                         reconnect, admin_retry)}
    result = scenarios[name](*args)
    print(json.dumps(result), flush=True)
