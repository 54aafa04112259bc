"""``tracklayer status``: what the outbox holds right now, and what is holding it up.

The numbers are ``TrackLayer.stats()`` (``delivery.report.build_stats``) read straight from
the outbox, plus the kind of each active pause. Exit code 1 when a person must act: dead
rows, paused rows, or a pixel on an auth pause — so it can back a monitoring check as it is.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ..delivery.outbox import PAUSE_AUTH, State
from ..delivery.report import build_stats
from .output import EXIT_OK, EXIT_PROBLEMS, counts_table, format_age, table

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
    status = build_stats(outbox, now=current, dry_run=settings.dry_run)
    status.pop("buffered_in_memory", None)  # a property of a live engine, not of the outbox
    status["outbox"] = settings.outbox
    status["pixel_id"] = settings.pixel_id
    status["total"] = sum(status["by_state"].values())
    status["pause_kind"] = {
        pixel: pause.kind for pixel, pause in outbox.pauses().items() if pause.active(current)
    }
    return status


def needs_attention(status: dict[str, Any]) -> bool:
    """Dead or paused rows, or an auth pause: a person has to act."""
    by_state = status["by_state"]
    auth_paused = PAUSE_AUTH in status["pause_kind"].values()
    return bool(by_state.get(State.DEAD) or by_state.get(State.PAUSED) or auth_paused)


def render_status(status: dict[str, Any]) -> str:
    """The human status report."""
    lines = [
        f"outbox {status['outbox']}  ·  pixel {status['pixel_id']}  ·  "
        f"{status['total']} conversions"
        + ("  ·  DRY-RUN (nothing is sent to X)" if status["dry_run"] else ""),
        "",
        counts_table(status["by_event"], State.ALL, "event"),
        "",
        f"oldest waiting: {format_age(status['oldest_pending_age_seconds'])}",
    ]
    for pixel, reason in sorted(status["paused"].items()):
        kind = status["pause_kind"].get(pixel, "")
        lines.append(f"PAUSED pixel {pixel} ({kind}): {reason}")
    if status["last_error"]:
        rows = [
            [pixel, e["at"][:19] + "Z", e["conversion_id"], e["state"], e["http_status"],
             e["error_code"] or e["error_message"] or "-"]
            for pixel, e in sorted(status["last_error"].items())
        ]
        lines += ["", "last error per pixel:",
                  table(["pixel", "at", "conversion_id", "state", "http", "error"], rows)]
    return "\n".join(lines)


def run(ctx: CommandContext, *, stop: threading.Event | None = None) -> int:
    """Print the status once, or every ``--watch`` seconds until Ctrl-C / ``stop``."""
    interval = ctx.args.watch
    outbox = ctx.outbox()
    waiter = stop or threading.Event()
    while True:
        status = collect_status(outbox, ctx.settings)
        if interval is not None and not ctx.as_json and ctx.out.isatty():
            ctx.out.write(_CLEAR_SCREEN)
        # Watching with --json prints one JSON document per line (JSON Lines).
        ctx.emit(status, render_status(status), compact=interval is not None)
        ctx.out.flush()
        try:
            if interval is None or waiter.wait(max(0.2, float(interval))):
                break
        except KeyboardInterrupt:  # Ctrl-C is how a watch ends
            break
    return EXIT_PROBLEMS if needs_attention(status) else EXIT_OK
