"""``MemoryOutbox``: the SQLite outbox's exact semantics, in memory, for tests and demos.

It runs the same SQL as ``SQLiteOutbox`` on one private ``:memory:`` connection shared by
all threads (guarded by a lock), so behaviour never drifts between the two. Nothing survives
the process: never use it in production.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

from .sqlite_outbox import SQLiteOutbox


class MemoryOutbox(SQLiteOutbox):
    """A process-local, non-durable outbox (tests only)."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self._shared: sqlite3.Connection | None = None
        self._mutex = threading.RLock()

    def __repr__(self) -> str:
        return "MemoryOutbox()"

    def _connection(self) -> sqlite3.Connection:
        # Called with the mutex held (see _lock): one connection, created on first use.
        if self._shared is None:
            self._shared = sqlite3.connect(
                ":memory:", isolation_level=None, check_same_thread=False
            )
            self._migrate(self._shared)
        return self._shared

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with self._mutex:
            yield

    def close(self) -> None:
        """Drop the data (the connection is the data)."""
        with self._mutex:
            if self._shared is not None:
                self._shared.close()
                self._shared = None
