"""Output for people and scripts: aligned tables, ``--json``, ages, times, masking.

Every command builds one JSON-safe result and a human rendering of it; ``emit()`` prints
whichever the user asked for, so ``--json`` always carries the same facts as the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

_RELATIVE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned), or ``(none)`` without rows."""
    if not rows:
        return "(none)"
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)
    ]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def emit(result: Any, human: str, *, as_json: bool, out: TextIO, compact: bool = False) -> None:
    """Print ``result`` as JSON (for scripts; one line with ``compact``) or the ``human`` text."""
    if as_json:
        indent = None if compact else 2
        out.write(json.dumps(result, indent=indent, sort_keys=True, default=_json_default) + "\n")
    else:
        out.write(human.rstrip("\n") + "\n")


def format_age(seconds: float | None) -> str:
    """``42s``, ``7m 3s``, ``2h 5m``, ``3d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_time(moment: datetime | None) -> str:
    """UTC, second precision, ``-`` for None."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def format_epoch(epoch: float | None) -> str:
    """``format_time`` for epoch seconds (how the outbox stores times)."""
    return format_time(None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc))


def shorten_hash(digest: str | None) -> str | None:
    """``973dfe46…813b``: enough to compare by eye, too little to be the identifier."""
    if not digest or len(digest) <= 12:
        return digest
    return f"{digest[:8]}…{digest[-4:]}"


def secret_presence(value: str | None) -> str:
    """Describe a secret without showing any of it."""
    return f"present ({len(value)} chars)" if value else "missing"


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """``7d`` / ``12h`` / ``30m`` (that long ago) or an ISO date/datetime (UTC if naive).

    Raises ``ValueError`` with a readable message (argparse turns it into a usage error).
    """
    current = now or datetime.now(timezone.utc)
    match = _RELATIVE_RE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return current - timedelta(seconds=amount * _UNIT_SECONDS[unit])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use an ISO date like 2026-04-24 (UTC) "
            "or an age like 7d, 12h, 30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def counts_table(
    counts: Mapping[str, Mapping[str, int]], states: Sequence[str], row_label: str
) -> str:
    """A ``row x state`` count table with a total row, only columns that are non-zero."""
    used = [s for s in states if any(c.get(s) for c in counts.values())]
    extra = sorted({s for c in counts.values() for s in c if c.get(s)} - set(states))
    columns = used + extra
    rows: list[list[object]] = []
    for name in sorted(counts):
        row = [counts[name].get(s, 0) for s in columns]
        rows.append([name, *row, sum(row)])
    if rows:
        totals = [
            sum(counts[name].get(s, 0) for name in counts) for s in columns
        ]
        rows.append(["total", *totals, sum(totals)])
    return table([row_label, *columns, "total"], rows)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return format_time(value)
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    return str(value)
