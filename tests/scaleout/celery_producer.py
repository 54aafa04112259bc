"""One web process of the scale-out tests: converts the ids given on the command line.

``python -m tests.scaleout.celery_producer ID...`` — uses the engine exactly as a web host in
``delivery="celery"`` mode does (settings from ``TLTEST_SETTINGS``), then prints the
ids whose ``convert()`` was new here.
"""

from __future__ import annotations

import json
import os
import sys

from tracklayer_middleware.engine import TrackLayer


def main(ids: list[str]) -> None:
    engine = TrackLayer(json.loads(os.environ["TLTEST_SETTINGS"]))
    for conversion_id in ids:
        engine.convert("purchase", conversion_id=conversion_id, value=10.0, currency="USD",
                       email=f"{conversion_id}@example.com")
    engine.close(timeout=0)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
