"""Whatever ``build_conversion()`` lets through, the fake X (X's documented rules) accepts.

If the payload builder and the fake's rules ever disagree, either real conversions would be
refused by X (bisected to dead) or the fake would be too lax to catch it.
"""

from __future__ import annotations

from datetime import timezone

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tracklayer_middleware.conversion import build_conversion
from tracklayer_middleware.errors import ConversionError
from tracklayer_middleware.settings import TrackLayerSettings
from tracklayer_middleware.testing.x_rules import check_body

SETTINGS = TrackLayerSettings.from_mapping(
    {
        "pixel_id": "o1a2b",
        "secret_key": "k" * 32,
        "events": {"purchase": "o87ni", "lead": "tw-o1a2b-o87nj"},
    }
)

maybe = st.none().__or__
ids = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
contents = st.lists(
    st.fixed_dictionaries(
        {"content_id": ids},
        optional={
            "content_name": st.text(max_size=30),
            "content_type": st.text(max_size=10),
            "content_price": st.floats(min_value=0, max_value=1e6, allow_nan=False),
            "num_items": st.integers(min_value=1, max_value=50),
            "content_group_id": ids,
        },
    ),
    max_size=3,
)


@settings(
    max_examples=150,
    # Refused inputs are assume()d away on purpose; at times more than Hypothesis likes.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    event=st.sampled_from(["purchase", "lead"]),
    conversion_id=ids,
    conversion_time=maybe(st.datetimes(timezones=st.just(timezone.utc))),
    value=maybe(st.floats(min_value=0, max_value=1e7, allow_nan=False)),
    currency=maybe(st.sampled_from(["USD", "EUR", "JPY", "usd"])),
    number_items=maybe(st.integers(min_value=-1, max_value=100)),
    description=maybe(st.text(max_size=50)),
    contents=maybe(contents),
    email=maybe(st.emails()),
    phone=maybe(st.from_regex(r"\+1[2-9][0-9]{9}", fullmatch=True)),
    twclid=maybe(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)),
    ip_address=maybe(st.ip_addresses().map(str)),
    user_agent=maybe(st.text(min_size=1, max_size=40)),
    external_id=maybe(ids),
    send_external_id=st.booleans(),
)
def test_every_buildable_conversion_passes_x_rules(send_external_id, twclid, **fields):
    try:
        conversion = build_conversion(SETTINGS, attribution=twclid, **fields)
    except ConversionError:
        assume(False)  # invalid input is refused before it could ever reach X
        raise
    assume(conversion.initial_state == "pending")  # only pending ones are ever sent
    body = {"conversions": [conversion.to_x(send_external_id=send_external_id)]}
    assert check_body(body, "o1a2b") is None
