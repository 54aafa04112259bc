"""One error hierarchy: every exception TrackLayer raises on purpose is a ``TrackLayerError``.

Messages say what was wrong and how to fix it, and never contain a token or raw PII.
"""

from __future__ import annotations

from collections.abc import Iterable


class TrackLayerError(Exception):
    """Base class of every error TrackLayer raises on purpose."""


class ConfigurationError(TrackLayerError):
    """The settings are wrong. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if len(self.problems) == 1:
            message = f"TrackLayer is misconfigured: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"TrackLayer is misconfigured ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)


class ConversionError(TrackLayerError, ValueError):
    """A ``convert()`` call was given invalid data; ``field`` names the offending argument."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class DeliveryError(TrackLayerError):
    """Delivery infrastructure failed (outbox unwritable, X client misused, ...)."""


class OutboxError(DeliveryError):
    """The outbox could not be read or written (disk full, read-only file, locked too long)."""
