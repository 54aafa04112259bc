"""The example of docs/testing.md, end to end: engine → outbox → sender → client → fake X."""

from __future__ import annotations

from tracklayer_middleware import TrackLayer


def test_purchase_is_delivered_once_despite_a_503(fake_x, tmp_path):
    tracklayer = TrackLayer(
        pixel_id="o1a2b",
        secret_key="a-long-random-test-secret",
        events={"purchase": "o87ni"},
        api_base_url=fake_x.base_url,
        environment="production",
        outbox=f"sqlite:///{tmp_path}/outbox.sqlite3",
        retry_base_seconds=0.01,
    )
    try:
        fake_x.script(503)
        tracklayer.convert(
            "purchase", conversion_id="ord_1", value=10.0, currency="USD", email="a@example.com"
        )
        assert tracklayer.flush(timeout=10)
    finally:
        tracklayer.close()
    assert fake_x.accepted_ids() == {"ord_1": 1}
    assert [r.status for r in fake_x.requests] == [503, 200]
    assert fake_x.received_ids() == {"ord_1": 2}  # the retry reused the conversion_id
