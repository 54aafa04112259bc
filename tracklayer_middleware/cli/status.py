"""``tracklayer status``: what the outbox holds right now, and what is holding it up.

Exit code 1 when something needs a person: dead rows, paused rows, or a pixel on an auth
pause — so ``tracklayer status`` can back a monitoring check as it is.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..delivery.outbox import PAUSE_AUTH, State
from .output import EXIT_OK, EXIT_PROBLEMS, counts_table, format_age, format_time, table

if TYPE_CHECKING:
    from ..delivery.outbox import Outbox
    from ..settings import TrackLayerSettings
    from .context import CommandContext

_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def collect_status(
    outbox: Outbox, settings: TrackLayerSettings, *, now: float | None = None
) -> dict[str, Any]:
    """The status as one JSON-safe dict (the ``--json`` output)."""
    current = time.time() if now is None else now
    by_event = outbox.counts()
    by_state: dict[str, int] = {}
    for states in by_event.values():
        for state, n in states.items():
            by_state[state] = by_state.get(state, 0) + n
    oldest = outbox.oldest_unfinished()
    last_errors = {
        pixel: {
            "conversion_id": entry.conversion_id,
            "event": entry.event,
            "state": entry.state,
            "http_status": entry.http_status,
            "error_code": entry.error_code,
            "error_message": entry.error_message,
            "debug_id": entry.debug_id,
            "at": entry.finished_at,
        }
        for pixel, entry in outbox.last_errors().items()
    }
    pauses = {
        pixel: {
            "kind": pause.kind,
            "reason": pause.reason,
            "since": pause.since,
            "until": pause.until,
            "probes": pause.probes,
            "http_status": pause.status,
            "error_code": pause.code,
        }
        for pixel, pause in outbox.pauses().items()
        if pause.active(current)
    }
    return {
        "outbox": settings.outbox,
        "pixel_id": settings.pixel_id,
        "dry_run": settings.dry_run,
        "total": sum(by_state.values()),
        "by_state": by_state,
        "by_event": by_event,
        "oldest_pending_at": oldest,
        "oldest_pending_age_seconds": None if oldest is None else max(0.0, current - oldest),
        "last_errors": last_errors,
        "pauses": pauses,
    }


def needs_attention(status: dict[str, Any]) -> bool:
    """Dead or paused rows, or an auth pause: a person has to act."""
    by_state = status["by_state"]
    auth_paused = any(p["kind"] == PAUSE_AUTH for p in status["pauses"].values())
    return bool(by_state.get(State.DEAD) or by_state.get(State.PAUSED) or auth_paused)


def render_status(status: dict[str, Any]) -> str:
    """The human status report."""
    lines = [
        f"outbox {status['outbox']}  ·  pixel {status['pixel_id']}"
        + ("  ·  DRY-RUN (nothing is sent to X)" if status["dry_run"] else ""),
        "",
        counts_table(status["by_event"], State.ALL, "event"),
        "",
        f"oldest waiting conversion: {format_age(status['oldest_pending_age_seconds'])}"
        + ("" if status["oldest_pending_at"] is None else " old"),
    ]
    for pixel, pause in sorted(status["pauses"].items()):
        until = "until fixed" if pause["kind"] == PAUSE_AUTH else f"until {_when(pause['until'])}"
        lines.append(f"PAUSED pixel {pixel} ({pause['kind']}, {until}): {pause['reason']}")
    if status["last_errors"]:
        rows = [
            [pixel, _when(e["at"]), e["conversion_id"], e["state"], e["http_status"],
             e["error_code"] or e["error_message"] or "-"]
            for pixel, e in sorted(status["last_errors"].items())
        ]
        lines += ["", "last error per pixel:",
                  table(["pixel", "at", "conversion_id", "state", "http", "error"], rows)]
    return "\n".join(lines)


def _when(epoch: float | None) -> str:
    return format_time(None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc))


def run(ctx: CommandContext, *, stop: threading.Event | None = None) -> int:
    """Print the status once, or every ``--watch`` seconds until Ctrl-C / ``stop``."""
    interval = ctx.args.watch
    outbox = ctx.outbox()
    while True:
        status = collect_status(outbox, ctx.settings)
        if interval is not None and not ctx.as_json and ctx.out.isatty():
            ctx.out.write(_CLEAR_SCREEN)
        ctx.emit(status, render_status(status))
        if interval is None:
            return EXIT_PROBLEMS if needs_attention(status) else EXIT_OK
        ctx.out.flush()
        waiter = stop or threading.Event()
        if waiter.wait(max(0.2, float(interval))):
            return EXIT_PROBLEMS if needs_attention(status) else EXIT_OK
