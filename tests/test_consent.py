"""Consent parsing, gating and merging."""

from __future__ import annotations

import pytest

from tracklayer_middleware.consent import Consent


def test_from_json_reads_the_guides_shape() -> None:
    consent = Consent.from_json({"adStorage": "granted", "adUserData": "denied"})
    assert consent == Consent(ad_storage=True, ad_user_data=False)


def test_missing_keys_and_null_are_unknown() -> None:
    assert Consent.from_json({}) == Consent()
    assert Consent.from_json(None) == Consent()
    assert Consent.from_json({"adStorage": None, "adUserData": "granted"}) == Consent(
        None, True
    )


def test_booleans_case_and_consent_mode_names_are_accepted() -> None:
    assert Consent.from_json({"ad_storage": " GRANTED ", "ad_user_data": False}) == Consent(
        True, False
    )


def test_unrelated_keys_are_ignored() -> None:
    assert Consent.from_json({"analyticsStorage": "granted"}) == Consent()


@pytest.mark.parametrize("obj", ["granted", ["adStorage"], 1, True])
def test_non_object_is_a_value_error(obj: object) -> None:
    with pytest.raises(ValueError, match="consent must be an object"):
        Consent.from_json(obj)


@pytest.mark.parametrize("value", ["yes", 1, {"x": 1}, ""])
def test_bad_signal_names_the_key(value: object) -> None:
    with pytest.raises(ValueError, match="'adUserData' must be \"granted\" or \"denied\""):
        Consent.from_json({"adUserData": value})


def test_to_json_round_trips_known_fields_only() -> None:
    consent = Consent(ad_storage=False)
    assert consent.to_json() == {"adStorage": "denied"}
    assert Consent.from_json(consent.to_json()) == consent
    full = Consent(True, False)
    assert Consent.from_json(full.to_json()) == full


@pytest.mark.parametrize(
    ("signal", "required", "allowed"),
    [
        (True, False, True),
        (True, True, True),
        (False, False, False),
        (False, True, False),
        (None, False, True),
        (None, True, False),
    ],
)
def test_gating(signal: bool | None, required: bool, allowed: bool) -> None:
    assert Consent(ad_storage=signal).storage_allowed(required) is allowed
    assert Consent(ad_user_data=signal).sending_allowed(required) is allowed


def test_merged_lets_known_fields_of_other_win() -> None:
    base = Consent(ad_storage=True, ad_user_data=False)
    assert base.merged(Consent()) == base
    assert base.merged(Consent(ad_user_data=True)) == Consent(True, True)
    assert Consent().merged(Consent(ad_storage=False)) == Consent(False, None)
