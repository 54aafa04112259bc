"""``tracklayer trace <conversion_id>``: did this purchase reach X, and if not, why?

Prints ``Trace`` (captured when, attribution and why, identifier names, every attempt with
HTTP status, X error code, debug_id and latency, the guide's hint) for each row using the
conversion id, plus the X payload as it is sent, hashes shortened. Exit 1 when unknown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..conversion import x_payload
from ..delivery.report import Trace
from .output import EXIT_OK, EXIT_PROBLEMS, shorten_hash

if TYPE_CHECKING:
    from ..delivery.outbox import OutboxRow
    from ..settings import TrackLayerSettings
    from .context import CommandContext

_HASHED_KEYS = ("hashed_email", "hashed_phone_number")  # twclid is a click id: shown whole


def payload_as_sent(row: OutboxRow, settings: TrackLayerSettings) -> dict[str, Any] | None:
    """The element of X's ``{"conversions": [...]}`` body for this row, hashes shortened.

    None for a row whose record this TrackLayer cannot read (a newer record version).
    """
    try:
        body = x_payload(row.record, send_external_id=settings.send_external_id)
    except (ValueError, TypeError, KeyError):
        return None
    body["identifiers"] = [
        {k: (shorten_hash(v) if k in _HASHED_KEYS else v) for k, v in item.items()}
        for item in body["identifiers"]
    ]
    return body


def render_payload(body: dict[str, Any] | None) -> str:
    """The payload as indented ``key: value`` lines."""
    if body is None:
        return "  payload     (record written by a newer TrackLayer; upgrade to show it)"
    lines = ["  payload     as sent to X (hashes shortened):"]
    for key, value in body.items():
        if key == "identifiers":
            shown = ", ".join(f"{k}={v}" for item in value for k, v in item.items())
            lines.append(f"    {key}: [{shown}]")
        else:
            lines.append(f"    {key}: {value}")
    return "\n".join(lines)


def run(ctx: CommandContext) -> int:
    """Print the trace of ``args.conversion_id``; exit 1 when no row uses it."""
    conversion_id = ctx.args.conversion_id
    outbox = ctx.outbox()
    rows = outbox.rows(conversion_id)
    if not rows:
        ctx.emit(
            {"conversion_id": conversion_id, "found": False, "traces": []},
            f"no conversion {conversion_id!r} in the outbox {ctx.settings.outbox}.\n"
            "It was never converted here, was purged, or lives in another outbox "
            "(check --config / TRACKLAYER_OUTBOX).",
        )
        return EXIT_PROBLEMS
    attempts = outbox.attempts(conversion_id)
    traces, texts = [], []
    for row in rows:
        own = [a for a in attempts if a.event == row.event and a.pixel_id == row.pixel_id]
        trace = Trace.from_outbox(row, own)
        payload = payload_as_sent(row, ctx.settings)
        traces.append({**trace.to_dict(), "payload": payload})
        texts.append(f"{trace}\n{render_payload(payload)}")
    ctx.emit({"conversion_id": conversion_id, "found": True, "traces": traces},
             "\n\n".join(texts))
    return EXIT_OK
