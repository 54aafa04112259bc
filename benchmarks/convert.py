"""``convert()`` with e-mail and phone hashing: validation, hashing and queueing, per call.

The figure is the request path (``request.tracker.convert(...)``, which queues on the
request; the hand-off after the response is the enqueue benchmark). The engine's own
``convert()``, which also commits the row to a SQLite file before returning, is shown as an
info row.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from . import apps
from .harness import Result, Scale, Stats, Target, interleaved, per_op

NAME = "convert"


def purchase(ids: itertools.count[int]) -> dict[str, Any]:
    """A purchase with every identifier a checkout usually has (a new id each call)."""
    return {
        "conversion_id": f"ord_{next(ids)}_purchase",
        "value": 129.95,
        "currency": "USD",
        "email": " Jane.Doe@Example.com",
        "phone": "+1 (415) 555-0100",
        "external_id": "cust_10492",
    }


def run(scale: Scale) -> list[Result]:
    """µs per ``tracker.convert()`` and per durable ``TrackLayer.convert()``."""
    from tracklayer_middleware.attribution import Attribution
    from tracklayer_middleware.consent import Consent

    n = scale.pick(smoke=10, quick=2_000, full=5_000)
    ids = itertools.count()
    click = Attribution.capture(
        apps.TWCLID, "https://shop.example" + apps.LANDING_PATH, Consent(True, True)
    )
    with tempfile.TemporaryDirectory(prefix="tracklayer-bench-") as tmp:
        memory = apps.engine()
        durable = apps.engine(outbox=f"sqlite:///{Path(tmp) / 'outbox.db'}")

        def in_request() -> float:
            tracker = memory.tracker(attribution=click)
            return per_op(lambda: tracker.convert("purchase", **purchase(ids)), n)

        def committed() -> float:
            return per_op(
                lambda: durable.convert("purchase", attribution=apps.TWCLID, **purchase(ids)),
                max(1, n // 5),
            )

        try:
            samples = interleaved({"tracker": in_request, "engine": committed}, scale.reps)
        finally:
            memory.close(timeout=1)
            durable.close(timeout=1)
    return [
        Result(
            name=NAME,
            figure="`convert()` with email+phone hashing, per call",
            stats=Stats.of(samples["tracker"]).scaled(1e6),
            unit="µs",
            target=Target("<=", 50),
            baseline="—",
            detail="request.tracker.convert(): validate, hash, attach click, queue",
        ),
        Result(
            name=NAME + "_durable",
            figure="`TrackLayer.convert()` out of a request, committed to SQLite",
            stats=Stats.of(samples["engine"]).scaled(1e6),
            unit="µs",
            target=None,
            baseline="—",
            detail="the same plus one committed SQLite transaction (WAL, synchronous=NORMAL)",
        ),
    ]
