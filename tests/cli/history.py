"""A delivery history built against the fake X: sent, retried, dead, paused, consent-skipped.

Built once per test module through the real engine and a real SQLite outbox, so the CLI
reads exactly what a production outbox would hold. ``EXPECTED`` is what really happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tracklayer_middleware.consent import Consent
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.testing import FakeResponse, FakeXConversionsAPI

from .conftest import SECRET_KEY, TOKEN, _toml

TWCLID = "29q0w6g2k2m4a"
EMAIL = "Jane.Doe@Example.com"

# {event: {state: n}} after the story below.
EXPECTED = {
    "purchase": {"sent": 2, "dead": 1, "paused": 1},
    "lead": {"sent": 1, "skipped_consent": 1, "skipped_no_identifier": 1},
}


def build_history(directory: Path) -> tuple[Path, FakeXConversionsAPI]:
    """Run the story against a fresh fake X; returns the config file and the stopped fake."""
    with pytest.MonkeyPatch.context() as mp, FakeXConversionsAPI(
        pixel_ids=["o1a2b"], token=TOKEN
    ) as fake:
        mp.setenv("X_ADS_BEARER_TOKEN", TOKEN)
        values = {
            "pixel_id": "o1a2b",
            "secret_key": SECRET_KEY,
            "environment": "production",
            "api_base_url": fake.base_url,
            "outbox": f"sqlite:///{directory / 'outbox.sqlite3'}",
            "retry_base_seconds": 0.01,
            "retry_max_seconds": 0.02,
        }
        config = directory / "tracklayer.toml"
        config.write_text(
            "\n".join(f"{k} = {_toml(v)}" for k, v in values.items())
            + '\n[events]\nlead = "o87nf"\npurchase = "o87ni"\n',
            encoding="utf-8",
        )
        engine = TrackLayer({**values, "events": {"lead": "o87nf", "purchase": "o87ni"}})
        try:
            engine.convert("purchase", conversion_id="ord_1_purchase", value=129.95,
                           currency="USD", email=EMAIL, attribution=TWCLID)
            engine.convert("lead", conversion_id="lead_1", email=EMAIL)
            assert engine.flush(10)
            fake.script(503)
            engine.convert("purchase", conversion_id="ord_2_purchase", value=20.0,
                           attribution=TWCLID)
            assert engine.flush(10)
            fake.script(FakeResponse(400))
            engine.convert("purchase", conversion_id="ord_bad_purchase", value=5.0,
                           email=EMAIL)
            assert engine.flush(10)
            engine.convert("lead", conversion_id="lead_2", email=EMAIL,
                           consent=Consent(ad_user_data=False))
            engine.convert("lead", conversion_id="lead_3")
            fake.set_token("rotated-on-x-but-not-here")
            engine.convert("purchase", conversion_id="ord_3_purchase", value=1.0,
                           attribution=TWCLID)
            assert engine.flush(10)
        finally:
            engine.close(1)
    return config, fake
