"""Property cases: whatever a caller or a config file throws at the public entry points, the
answer is a result or a ``TrackLayerError`` subclass, never another exception.

(The round-trip and X-validity properties of the pure model live in tests/test_properties.py;
these are the hostile-input ones.)
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import SECRET_KEY, Observed, base_config
from tracklayer_middleware.attribution import AttributionCodec
from tracklayer_middleware.conversion import Conversion, build_conversion
from tracklayer_middleware.errors import ConfigurationError
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing.x_rules import check_body

pytestmark = pytest.mark.adversarial_input

HOSTILE = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=10),
    st.decimals(allow_nan=True, allow_infinity=True),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
)

SETTING_KEYS = [
    "pixelId", "secret_key", "xEventMap", "allowedEnvironments", "secret_key_fallbacks",
    "trusted_proxies", "allowed_origins", "cookie_max_age", "cookie_name", "attribution_path",
    "api_base_url", "api_version", "endpoint", "auth", "token_env", "outbox", "delivery",
    "timeout_seconds", "lease_seconds", "batch_size", "max_attempts", "default_currency",
    "phone_default_region", "environment", "enabled", "consent_required",
]


@HOSTILE
@given(changes=st.dictionaries(st.sampled_from(SETTING_KEYS), anything, min_size=1, max_size=4))
def test_settings_from_any_values_is_settings_or_configuration_error(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    observed = Observed()
    outcome = observed.calls(TrackLayerSettings.from_mapping, base_config(tmp_path, **changes))
    assert isinstance(outcome, (TrackLayerSettings, ConfigurationError))
    assert SECRET_KEY not in str(outcome)


CONVERSION_IDS = st.one_of(st.text(max_size=300), anything)
CONVERT_FIELDS = {
    "conversion_time": st.one_of(moments, st.datetimes(), anything),
    "value": st.one_of(st.floats(), st.decimals(), st.integers(), anything),
    "currency": st.one_of(st.sampled_from(["USD", "EUR", "usd", "XXX"]), anything),
    "number_items": st.one_of(st.integers(), anything),
    "description": st.one_of(st.text(), anything),
    "contents": st.one_of(
        st.lists(st.dictionaries(st.sampled_from(["content_id", "num_items", "content_price",
                                                   "x"]), anything, max_size=3), max_size=3),
        anything,
    ),
    "email": st.one_of(st.emails(), st.text(max_size=60), anything),
    "phone": st.one_of(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True), anything),
    "external_id": anything,
    "ip_address": st.one_of(st.ip_addresses().map(str), anything),
    "user_agent": anything,
    "attribution": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True), anything),
}


@HOSTILE
@given(
    event=st.one_of(st.sampled_from(["purchase", "lead", "refund"]), anything),
    fields=st.fixed_dictionaries(
        {"conversion_id": CONVERSION_IDS},
        optional=CONVERT_FIELDS,  # type: ignore[arg-type]
    ),
)
def test_convert_with_any_arguments_is_a_conversion_or_a_trackLayer_error(
    tmp_path: Path, event: Any, fields: dict[str, Any]
) -> None:
    settings_ = TrackLayerSettings.from_mapping(base_config(tmp_path))
    observed = Observed()
    now = datetime(2026, 5, 1, tzinfo=timezone.utc)
    outcome = observed.calls(build_conversion, settings_, event, now=now, **fields)
    if isinstance(outcome, Conversion):
        body = outcome.to_x()
        json.dumps(body, allow_nan=False)  # X-valid JSON: no NaN/Infinity, all serializable
        if outcome.initial_state == "pending":  # what we would send, X's rules must accept
            assert check_body({"conversions": [body]}, outcome.pixel_id) is None, body
        assert Conversion.from_record(json.loads(json.dumps(outcome.to_record()))) == outcome
        assert outcome.conversion_time - now <= timedelta(minutes=5)
        value = body.get("value")
        assert value is None or (math.isfinite(value) and value >= 0)


@HOSTILE
@given(value=st.one_of(st.text(max_size=5000), st.binary(max_size=200).map(
    lambda b: b.decode("latin-1"))))
def test_any_cookie_value_reads_as_none_never_raises(tmp_path: Path, value: str) -> None:
    codec = AttributionCodec(TrackLayerSettings.from_mapping(base_config(tmp_path)))
    assert codec.loads_cookie(value) is None
    assert codec.loads_token(value) is None


@HOSTILE
@given(data=st.data())
def test_forged_payload_signed_with_our_key_never_raises(tmp_path: Path, data: Any) -> None:
    """Even a payload signed with the real key (a leaked key, a bug) must not crash a read."""
    from itsdangerous import URLSafeTimedSerializer

    codec = AttributionCodec(TrackLayerSettings.from_mapping(base_config(tmp_path)))
    payload = data.draw(
        st.one_of(
            anything,
            st.fixed_dictionaries(
                {"v": st.just(1), "t": anything, "c": anything, "s": anything, "i": anything},
                optional={"u": anything},
            ),
        )
    )
    import hashlib

    forged = URLSafeTimedSerializer(
        SECRET_KEY, salt="tracklayer.attribution.cookie",
        signer_kwargs={"digest_method": hashlib.sha256},
    )
    try:
        value = forged.dumps(payload)
    except (TypeError, ValueError):
        return  # not JSON-serializable: cannot be a cookie at all
    outcome = codec.loads_cookie(value)
    assert outcome is None or outcome.twclid


def test_decimal_and_float_extremes_are_refused_cleanly(tmp_path: Path) -> None:
    settings_ = TrackLayerSettings.from_mapping(base_config(tmp_path))
    observed = Observed()
    for value in (Decimal("1e400"), Decimal("-0"), 1e308 * 10, -0.0, Decimal("sNaN")):
        observed.calls(build_conversion, settings_, "purchase", conversion_id="c",
                       attribution="abc", value=value)
    assert observed.server_errors == 0


TRACKER_FIELDS = {k: v for k, v in CONVERT_FIELDS.items() if k != "attribution"}


@HOSTILE
@given(
    calls=st.lists(
        st.fixed_dictionaries({"conversion_id": CONVERSION_IDS},
                              optional=TRACKER_FIELDS),  # type: ignore[arg-type]
        min_size=1, max_size=4,
    )
)
def test_request_tracker_convert_is_a_conversion_or_a_trackLayer_error(
    tmp_path: Path, calls: list[dict[str, Any]]
) -> None:
    """A view's ``request.tracker.convert()`` with any field values: a ``Conversion`` (queued
    once per id) or a ``TrackLayerError``; the queue only ever holds valid conversions."""
    from tracklayer_middleware.attribution import Attribution
    from tracklayer_middleware.consent import Consent
    from tracklayer_middleware.engine import TrackLayer

    engine = TrackLayer(TrackLayerSettings.from_mapping(base_config(tmp_path, outbox="memory")))
    try:
        click = Attribution.capture("29q0w6g2k2m4a", "https://shop.test/", Consent(True, True))
        tracker = engine.tracker(attribution=click)
        observed = Observed()
        for fields in calls:
            observed.calls(tracker.convert, "purchase", **fields)
        ids = [c.conversion_id for c in tracker.pending]
        assert len(ids) == len(set(ids))
        for conversion in tracker.pending:
            json.dumps(conversion.to_x(), allow_nan=False)
    finally:
        engine.close(timeout=0)
