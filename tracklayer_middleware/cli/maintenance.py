"""``retry-dead``, ``purge`` and ``resume``: the ways an operator edits the outbox.

``retry-dead`` gives dead conversions a fresh attempt budget under their SAME conversion_id
(X deduplicates, so a retry can never double-count). ``purge`` deletes only finished rows
(sent, dry-run, skipped) and their log; nothing still owed to X is ever purged.
Both take ``--dry-run`` to list what they would touch. ``resume`` lifts a pixel's pause
(after rotating the token) instead of waiting up to 15 minutes for the automatic probe.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..delivery.outbox import OutboxRow, State
from .output import EXIT_OK, format_epoch, format_time, table

if TYPE_CHECKING:
    from .context import CommandContext


def _row_summary(row: OutboxRow) -> dict[str, Any]:
    return {
        "conversion_id": row.conversion_id,
        "event": row.event,
        "pixel_id": row.pixel_id,
        "state": row.state,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_code": row.last_code,
        "updated_at": row.updated_at,
    }


def _rows_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["conversion_id", "event", "state", "attempts", "last error", "updated"],
        [[r["conversion_id"], r["event"], r["state"], r["attempts"],
          r["last_code"] or r["last_status"] or "-", format_epoch(r["updated_at"])] for r in rows],
    )


def retry_dead(ctx: CommandContext) -> int:
    """Move dead rows (filtered by ``--event`` / ``--since``) back to pending."""
    args = ctx.args
    outbox = ctx.outbox()
    since: datetime | None = args.since
    rows = ctx.find_rows(
        states=(State.DEAD,),
        event=args.event,
        updated_since=None if since is None else since.timestamp(),
    )
    summaries = [_row_summary(r) for r in rows]
    if not rows or args.dry_run:
        text = (f"would retry {len(rows)} dead conversion(s):\n{_rows_table(summaries)}"
                if rows else "no dead conversion matches.")
        ctx.emit({"retried": 0, "would_retry": len(rows), "rows": summaries}, text)
        return EXIT_OK
    count = outbox.retry_dead(
        now=time.time(),
        conversion_ids=sorted({r.conversion_id for r in rows}),
        event=args.event,
    )
    ctx.emit({"retried": count, "rows": summaries},
             f"retried {count} dead conversion(s) with their original conversion_id:\n"
             f"{_rows_table(summaries)}\n"
             "a running sender (or `tracklayer worker`) delivers them next.")
    return EXIT_OK


def purge(ctx: CommandContext) -> int:
    """Delete finished rows last updated before ``--sent-before``."""
    cut: datetime = ctx.args.sent_before
    outbox = ctx.outbox()
    if ctx.args.dry_run:
        rows = ctx.find_rows(states=State.DONE, updated_before=cut.timestamp())
        by_state: dict[str, int] = {}
        for row in rows:
            by_state[row.state] = by_state.get(row.state, 0) + 1
        ctx.emit({"would_purge": len(rows), "by_state": by_state, "before": cut},
                 f"would purge {len(rows)} finished row(s) older than {format_time(cut)}: "
                 + (", ".join(f"{s} {n}" for s, n in sorted(by_state.items())) or "none"))
        return EXIT_OK
    count = outbox.purge(done_before=cut.timestamp())
    ctx.emit({"purged": count, "before": cut},
             f"purged {count} finished row(s) (sent, dry-run, skipped) older than "
             f"{format_time(cut)}; pending, retrying, paused and dead rows are kept.")
    return EXIT_OK


def resume(ctx: CommandContext) -> int:
    """Lift pixel pauses now (after the token was rotated) instead of waiting for the probe."""
    outbox = ctx.outbox()
    pauses = outbox.pauses()
    pixels = [ctx.args.pixel] if ctx.args.pixel else sorted(pauses)
    resumed = {pixel: outbox.resume(pixel, now=time.time()) for pixel in pixels}
    lines = [
        f"pixel {pixel}: pause lifted ({pauses[pixel].reason if pixel in pauses else 'none'}); "
        f"{n} paused row(s) back to pending"
        for pixel, n in resumed.items()
    ] or ["no pixel is paused."]
    if resumed:
        lines.append("a sender delivers them next; if the cause is not fixed, the first "
                     "answer from X pauses the pixel again (nothing is lost).")
    ctx.emit({"resumed": resumed}, "\n".join(lines))
    return EXIT_OK


_COMMANDS = {"retry-dead": retry_dead, "purge": purge, "resume": resume}


def run(ctx: CommandContext) -> int:
    """Dispatch ``retry-dead`` / ``purge`` / ``resume``."""
    return _COMMANDS[ctx.args.command](ctx)
