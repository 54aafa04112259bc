"""What a command runs with: parsed args, output streams, settings, and lazily the outbox/engine.

Read-only commands (status, trace, report, retry-dead, purge) open the outbox directly, never
an engine: an engine over a non-empty outbox starts sending on its own, and looking at the
queue must not change it. Only ``worker`` (and ``demo``) build an engine.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import DeliveryError
from .config import load_settings
from .output import emit

if TYPE_CHECKING:
    from ..delivery.outbox import Outbox, OutboxRow
    from ..engine import TrackLayer
    from ..settings import TrackLayerSettings


@dataclass
class CommandContext:
    """One command invocation; ``close()`` releases what it opened (never a given engine)."""

    args: argparse.Namespace
    out: TextIO
    err: TextIO
    given_settings: TrackLayerSettings | None = None
    given_engine: TrackLayer | None = None
    _settings: TrackLayerSettings | None = field(default=None, init=False)
    _outbox: Outbox | None = field(default=None, init=False)
    _engine: TrackLayer | None = field(default=None, init=False)

    @property
    def as_json(self) -> bool:
        """``--json`` was given."""
        return bool(getattr(self.args, "json", False))

    @property
    def settings(self) -> TrackLayerSettings:
        """The settings: the engine's, the shell's, or loaded from file/env (ConfigurationError)."""
        if self._settings is None:
            if self.given_engine is not None:
                self._settings = self.given_engine.settings
            elif self.given_settings is not None:
                self._settings = self.given_settings
            else:
                self._settings = load_settings(getattr(self.args, "config", None))
        return self._settings

    def outbox(self) -> Outbox:
        """The outbox named by the settings (the given engine's own when there is one)."""
        if self.given_engine is not None:
            return self.given_engine.outbox
        if self._outbox is None:
            from ..delivery.outbox import open_outbox

            self._outbox = open_outbox(self.settings)
        return self._outbox

    def find_rows(self, **filters: Any) -> list[OutboxRow]:
        """``Outbox.find(**filters)``, with a clear error for a backend that predates it."""
        outbox = self.outbox()
        if not hasattr(outbox, "find"):
            raise DeliveryError(
                f"the {type(outbox).__name__} outbox backend cannot list rows (it has no "
                "find()); `status` and `trace` still work with it."
            )
        return outbox.find(**filters)

    def engine(self, **overrides: Any) -> TrackLayer:
        """A sending engine: the given one, or a new one (settings ``overrides`` applied)
        that ``close()`` closes."""
        if self.given_engine is not None:
            return self.given_engine
        if self._engine is None:
            from ..engine import TrackLayer

            self._engine = TrackLayer(self.settings, **overrides)
        return self._engine

    def emit(self, result: Any, human: str, *, compact: bool = False) -> None:
        """Print ``result`` as JSON with ``--json`` (one line with ``compact``), else ``human``."""
        emit(result, human, as_json=self.as_json, out=self.out, compact=compact)

    def say(self, text: str) -> None:
        """Progress for people; silent with ``--json`` so stdout stays one JSON document."""
        if not self.as_json:
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        """Close what this context opened."""
        if self._engine is not None:
            self._engine.close()
        if self._outbox is not None:
            self._outbox.close()
