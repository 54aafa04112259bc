"""X's validation of a Conversions API body, as a pure function (used by the fake X).

The rules follow X's documentation (see ``docs/testing.md``): a body is ``{"conversions":
[...]}`` with 1..500 items, and one invalid item fails the whole request. ``check_body()``
returns the first problem as an ``XProblem`` (X answers with one ``INVALID_PARAMETER``
error), or None when the body would be accepted.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_CONVERSIONS = 500

CONVERSION_KEYS = frozenset(
    {
        "conversion_time",
        "event_id",
        "identifiers",
        "conversion_id",
        "value",
        "price_currency",
        "number_items",
        "description",
        "contents",
    }
)
# external_id is not in X's documented list; X tolerates it, but it does not make a match.
IDENTIFIER_KEYS = frozenset(
    {"twclid", "hashed_email", "hashed_phone_number", "ip_address", "user_agent", "external_id"}
)
MATCHING_IDENTIFIERS = frozenset({"twclid", "hashed_email", "hashed_phone_number"})
CONTENT_KEYS = frozenset(
    {"content_id", "content_name", "content_type", "content_price", "num_items", "content_group_id"}
)

_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_EVENT_ID_RE = re.compile(r"^(?:tw-(?P<pixel>[A-Za-z0-9]+)-)?(?P<event>[A-Za-z0-9]+)$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class XProblem:
    """Why X would refuse a body: one ``INVALID_PARAMETER`` error."""

    message: str
    parameter: str
    code: str = "INVALID_PARAMETER"

    def to_json(self) -> dict[str, Any]:
        """X's error answer: ``{"errors": [{"code", "message", "parameter"}]}``."""
        return {
            "errors": [{"code": self.code, "message": self.message, "parameter": self.parameter}]
        }


def event_id_of(raw_event_id: str) -> str:
    """The bare Events Manager id of ``o87ni`` or ``tw-<pixel>-o87ni``."""
    match = _EVENT_ID_RE.match(raw_event_id)
    return match.group("event") if match else raw_event_id


def check_body(body: Any, pixel_id: str) -> XProblem | None:
    """The first reason X would reject ``body`` posted for ``pixel_id``, or None."""
    return next(_body_problems(body, pixel_id), None)


def _body_problems(body: Any, pixel_id: str) -> Iterator[XProblem]:
    if not isinstance(body, dict):
        yield XProblem("The request body must be a JSON object.", "body")
        return
    for key in body:
        if key != "conversions":
            yield XProblem(f"Unknown parameter {key!r}.", key)
    conversions = body.get("conversions")
    if not isinstance(conversions, list) or not conversions:
        yield XProblem("conversions is required: a non-empty list.", "conversions")
        return
    if len(conversions) > MAX_CONVERSIONS:
        yield XProblem(
            f"At most {MAX_CONVERSIONS} conversions per request, got {len(conversions)}.",
            "conversions",
        )
    for index, item in enumerate(conversions):
        yield from _conversion_problems(item, f"conversions[{index}]", pixel_id)


def _conversion_problems(item: Any, at: str, pixel_id: str) -> Iterator[XProblem]:
    if not isinstance(item, dict):
        yield XProblem(f"{at} must be an object.", at)
        return
    for key in item:
        if key not in CONVERSION_KEYS:
            yield XProblem(f"Unknown parameter {key!r} in {at}.", f"{at}.{key}")
    for required in ("conversion_time", "event_id", "identifiers"):
        if required not in item:
            yield XProblem(f"{required} is required.", f"{at}.{required}")
    if "conversion_time" in item and not _valid_time(item["conversion_time"]):
        yield XProblem(
            "conversion_time must be ISO-8601 UTC with milliseconds, like "
            "2026-04-24T09:42:13.000Z.",
            f"{at}.conversion_time",
        )
    if "event_id" in item:
        yield from _event_id_problems(item["event_id"], f"{at}.event_id", pixel_id)
    if "identifiers" in item:
        yield from _identifier_problems(item["identifiers"], f"{at}.identifiers")
    if "conversion_id" in item and not _nonempty_str(item["conversion_id"]):
        yield XProblem("conversion_id must be a non-empty string.", f"{at}.conversion_id")
    if "value" in item and not _number(item["value"]):
        yield XProblem("value must be a number.", f"{at}.value")
    if "price_currency" in item and not (
        isinstance(item["price_currency"], str) and _CURRENCY_RE.match(item["price_currency"])
    ):
        yield XProblem("price_currency must be an ISO-4217 code like USD.", f"{at}.price_currency")
    if "number_items" in item and not _positive_int(item["number_items"]):
        yield XProblem("number_items must be an integer greater than 0.", f"{at}.number_items")
    if "description" in item and not isinstance(item["description"], str):
        yield XProblem("description must be a string.", f"{at}.description")
    if "contents" in item:
        yield from _contents_problems(item["contents"], f"{at}.contents")


def _event_id_problems(value: Any, at: str, pixel_id: str) -> Iterator[XProblem]:
    match = _EVENT_ID_RE.match(value) if isinstance(value, str) else None
    if match is None:
        yield XProblem("event_id must be an event id like o87ni or tw-<pixel>-o87ni.", at)
    elif match.group("pixel") not in (None, pixel_id):
        yield XProblem(f"event_id {value!r} belongs to another pixel than {pixel_id!r}.", at)


def _identifier_problems(value: Any, at: str) -> Iterator[XProblem]:
    if not isinstance(value, list) or not value:
        yield XProblem("identifiers must be a non-empty list of objects.", at)
        return
    present: set[str] = set()
    for index, identifier in enumerate(value):
        where = f"{at}[{index}]"
        if not isinstance(identifier, dict) or not identifier:
            yield XProblem("Each identifier must be a non-empty object.", where)
            continue
        for key, item in identifier.items():
            if key not in IDENTIFIER_KEYS:
                yield XProblem(f"Unknown identifier {key!r}.", f"{where}.{key}")
            elif not _nonempty_str(item):
                yield XProblem(f"{key} must be a non-empty string.", f"{where}.{key}")
            elif key.startswith("hashed_") and not _SHA256_RE.match(item):
                yield XProblem(
                    f"{key} must be a SHA-256 hex digest (64 lowercase hex characters).",
                    f"{where}.{key}",
                )
            elif key == "ip_address" and not _valid_ip(item):
                yield XProblem("ip_address must be an IPv4 or IPv6 address.", f"{where}.{key}")
            present.add(key)
    if not present & MATCHING_IDENTIFIERS:
        yield XProblem(
            "identifiers need twclid, hashed_email or hashed_phone_number "
            "(ip_address and user_agent only count together with one of them).",
            at,
        )


def _contents_problems(value: Any, at: str) -> Iterator[XProblem]:
    if not isinstance(value, list):
        yield XProblem("contents must be a list of objects.", at)
        return
    for index, content in enumerate(value):
        where = f"{at}[{index}]"
        if not isinstance(content, dict):
            yield XProblem("Each content must be an object.", where)
            continue
        for key, item in content.items():
            if key not in CONTENT_KEYS:
                yield XProblem(f"Unknown content parameter {key!r}.", f"{where}.{key}")
            elif key == "content_price" and not _number(item):
                yield XProblem("content_price must be a number.", f"{where}.{key}")
            elif key == "num_items" and not _positive_int(item):
                yield XProblem("num_items must be an integer greater than 0.", f"{where}.{key}")
            elif key not in ("content_price", "num_items") and not isinstance(item, str):
                yield XProblem(f"{key} must be a string.", f"{where}.{key}")


def _valid_time(value: Any) -> bool:
    if not isinstance(value, str) or not _TIME_RE.match(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
