"""``tracklayer report``: match quality per event — what X gets to match each conversion with.

Per event over a window: how many conversions carried a twclid, a hashed email, a hashed
phone, or none of the three; how many consent skipped; how many were sent, how many needed
more than one attempt (``retried``), how many died and with which X error code. Where a
share is low it prints the guide's advice ("Weak match quality: twclid is missing or
first-party identifiers were not normalized before hashing ...").

Shares are of conversions *captured* in the window (``created_at`` ≥ since), whatever their
delivery state, because match quality is decided at capture time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..delivery.outbox import OutboxRow, State
from .output import EXIT_OK, EXIT_PROBLEMS, format_time, table

if TYPE_CHECKING:
    from .context import CommandContext

TWCLID_SHARE_MIN = 0.5
EMAIL_SHARE_MIN = 0.5  # for events where the visitor typed an address (lead, sign_up, purchase)
NONE_SHARE_MAX = 0.1
CONSENT_SKIP_MAX = 0.3
DEAD_RATE_MAX = 0.01
EMAIL_EVENTS = ("lead", "sign_up", "purchase")
WEAK_MATCH_ADVICE = (
    "Weak match quality: twclid is missing or first-party identifiers were not normalized "
    "before hashing. Audit capture at landing and identity formatting before changing "
    "campaign strategy."
)


@dataclass(frozen=True)
class Advice:
    """One finding of the report: which event, what is low, what to do."""

    event: str
    finding: str
    advice: str

    def to_json(self) -> dict[str, str]:
        """JSON-safe form."""
        return {"event": self.event, "finding": self.finding, "advice": self.advice}


def build_report(rows: Iterable[OutboxRow], *, since: datetime) -> dict[str, Any]:
    """Aggregate outbox rows into the report (JSON-safe; the ``--json`` output)."""
    events: dict[str, dict[str, Any]] = {}
    for row in rows:
        names = set(row.record.get("identifiers") or ())
        stats = events.setdefault(row.event, _empty_stats())
        stats["total"] += 1
        stats["with_twclid"] += "twclid" in names
        stats["with_email"] += "hashed_email" in names
        stats["with_phone"] += "hashed_phone" in names
        stats["with_none"] += not names & {"twclid", "hashed_email", "hashed_phone"}
        stats["skipped_consent"] += row.state == State.SKIPPED_CONSENT
        stats["skipped_no_identifier"] += row.state == State.SKIPPED_NO_IDENTIFIER
        stats["sent"] += row.state == State.SENT
        stats["retried"] += row.attempts > 1
        note = str(row.record.get("attribution_note") or "unknown")
        if "twclid" not in names:
            stats["missing_twclid_why"][note] = stats["missing_twclid_why"].get(note, 0) + 1
        if row.state == State.DEAD:
            stats["dead"] += 1
            code = row.last_code or (f"HTTP {row.last_status}" if row.last_status else "unknown")
            stats["dead_by_code"][code] = stats["dead_by_code"].get(code, 0) + 1
    for stats in events.values():
        total = stats["total"]
        for key in ("with_twclid", "with_email", "with_phone", "with_none", "skipped_consent"):
            stats[f"{key}_share"] = stats[key] / total
        stats["dead_rate"] = stats["dead"] / total
    advice = [a.to_json() for name in sorted(events) for a in advise(name, events[name])]
    return {"since": since, "events": events, "advice": advice}


def _empty_stats() -> dict[str, Any]:
    return {
        "total": 0, "with_twclid": 0, "with_email": 0, "with_phone": 0, "with_none": 0,
        "skipped_consent": 0, "skipped_no_identifier": 0, "sent": 0, "retried": 0, "dead": 0,
        "dead_by_code": {}, "missing_twclid_why": {},
    }


def advise(event: str, stats: dict[str, Any]) -> list[Advice]:
    """The guide's advice where one of the event's shares crosses its threshold."""
    found: list[Advice] = []
    if stats["with_twclid_share"] < TWCLID_SHARE_MIN:
        why = ", ".join(f"{k} {v}" for k, v in sorted(stats["missing_twclid_why"].items()))
        found.append(Advice(event, f"only {stats['with_twclid_share']:.0%} carry a twclid "
                            f"(without: {why})", WEAK_MATCH_ADVICE))
    if event in EMAIL_EVENTS and stats["with_email_share"] < EMAIL_SHARE_MIN:
        found.append(Advice(event, f"only {stats['with_email_share']:.0%} carry a hashed email",
                            "pass email= (and phone=) to convert() where the visitor gave "
                            "them; TrackLayer normalizes and hashes them on the server."))
    if stats["with_none_share"] > NONE_SHARE_MAX:
        found.append(Advice(event, f"{stats['with_none_share']:.0%} have no twclid, email or "
                            "phone", "X can hardly match these: " + WEAK_MATCH_ADVICE))
    if stats["skipped_consent_share"] > CONSENT_SKIP_MAX:
        found.append(Advice(event, f"{stats['skipped_consent_share']:.0%} skipped for consent",
                            "check that the consent banner reports adUserData correctly "
                            "(consent_resolver) before assuming visitors declined."))
    if stats["dead_rate"] > DEAD_RATE_MAX:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(stats["dead_by_code"].items()))
        found.append(Advice(event, f"{stats['dead_rate']:.1%} dead ({codes})",
                            "run `tracklayer trace <conversion_id>` on one, fix the cause, "
                            "then `tracklayer retry-dead`."))
    return found


def render_report(report: dict[str, Any]) -> str:
    """The human report: one row per event, then the advice."""
    rows = []
    for name, s in sorted(report["events"].items()):
        dead_codes = ", ".join(f"{k} {v}" for k, v in sorted(s["dead_by_code"].items()))
        rows.append([
            name, s["total"], _pct(s["with_twclid_share"]), _pct(s["with_email_share"]),
            _pct(s["with_phone_share"]), _pct(s["with_none_share"]), s["skipped_consent"],
            s["sent"], s["retried"], f"{s['dead']}" + (f" ({dead_codes})" if dead_codes else ""),
        ])
    lines = [
        f"match quality of conversions captured since {format_time(report['since'])}",
        "",
        table(["event", "total", "twclid", "email", "phone", "none", "consent skip", "sent",
               "retried", "dead"], rows),
    ]
    if report["advice"]:
        lines.append("")
        for item in report["advice"]:
            lines += [f"! {item['event']}: {item['finding']}", f"  → {item['advice']}"]
    elif rows:
        lines += ["", "match quality looks healthy."]
    return "\n".join(lines)


def _pct(share: float) -> str:
    return f"{share:.0%}"


def run(ctx: CommandContext) -> int:
    """``tracklayer report [--since T] [--event E]``; exit 1 when there is advice."""
    since: datetime = ctx.args.since
    rows = ctx.find_rows(created_since=since.timestamp(), event=ctx.args.event)
    report = build_report(rows, since=since)
    report["generated_at"] = datetime.fromtimestamp(time.time(), timezone.utc)
    ctx.emit(report, render_report(report))
    return EXIT_PROBLEMS if report["advice"] else EXIT_OK
