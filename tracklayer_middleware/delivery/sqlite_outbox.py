"""``SQLiteOutbox``: the default durable outbox, one SQLite file shared by threads and processes.

How it stays correct with many writers:

* WAL journal + ``busy_timeout``: readers never block the writer, writers queue for a while
  instead of failing at once.
* Every write runs in ``BEGIN IMMEDIATE``: the write lock is taken up front, so two claims
  can never both read a row as due and both take it.
* Claims are leases (``lease_owner`` + ``lease_until``). A sender killed mid-send leaves rows
  ``in_flight`` with a lease that runs out; the next claim takes them again. Outcomes are
  applied only while the lease is still the claimer's, so a late sender never overwrites the
  one that took over.
* One connection per thread, and a fresh set after ``fork()`` (a connection must not cross a
  process boundary).

The delivery log lives in the same file (table ``delivery_log``) so ``trace()`` needs one file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OutboxError
from .log import DeliveryLogEntry
from .outbox import PAUSE_AUTH, OutboxRow, PixelPause, RowUpdate, State

if TYPE_CHECKING:
    from ..conversion import Conversion

logger = logging.getLogger("tracklayer.delivery.outbox")

BUSY_TIMEOUT_MS = 10_000

# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        pixel_id TEXT NOT NULL,
        event TEXT NOT NULL,
        event_id TEXT NOT NULL,
        conversion_id TEXT NOT NULL,
        record TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        first_attempt_at REAL,
        next_attempt_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        last_status INTEGER,
        last_code TEXT,
        last_error TEXT,
        UNIQUE (pixel_id, event_id, conversion_id)
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    CREATE INDEX outbox_conversion ON outbox (conversion_id);
    CREATE TABLE pixel_pause (
        pixel_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        until REAL NOT NULL,
        since REAL NOT NULL,
        probes INTEGER NOT NULL DEFAULT 0,
        status INTEGER,
        code TEXT
    );
    CREATE TABLE delivery_log (
        id INTEGER PRIMARY KEY,
        conversion_id TEXT NOT NULL,
        event TEXT NOT NULL,
        pixel_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,
        http_status INTEGER,
        error_code TEXT,
        error_message TEXT,
        debug_id TEXT,
        identifiers TEXT NOT NULL,
        latency_ms REAL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL
    );
    CREATE INDEX delivery_log_conversion ON delivery_log (conversion_id);
    CREATE INDEX delivery_log_failures ON delivery_log (pixel_id, http_status);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_ROW_COLUMNS = (
    "id, pixel_id, event, event_id, conversion_id, record, state, attempts, created_at, "
    "updated_at, first_attempt_at, next_attempt_at, lease_owner, last_status, last_code, "
    "last_error"
)
_LOG_COLUMNS = (
    "conversion_id, event, pixel_id, attempt, state, started_at, finished_at, http_status, "
    "error_code, error_message, debug_id, identifiers, latency_ms"
)
# Rows of a pixel whose pause (or next auth probe) lies in the future are not due.
_HELD = "pixel_id IN (SELECT pixel_id FROM pixel_pause WHERE until > :now)"
# When a waiting row is due: its own time, or its pixel's pause end if that is later.
_WAITING_DUE = (
    "MAX(next_attempt_at, COALESCE("
    "(SELECT until FROM pixel_pause p WHERE p.pixel_id = outbox.pixel_id), 0))"
)


class SQLiteOutbox:
    """The durable outbox in one SQLite file (see the module docstring for the guarantees)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._pid = os.getpid()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # Every thread's connection, so close() can release those of finished threads.
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        # Bumped when all connections are closed at once (before a fork): threads reopen.
        self._generation = 0
        self._gate = _Gate()
        _outboxes.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ------------------------------------------------------------------ connections
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except OSError:
            return None

    def _connection(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            self._after_fork_in_child()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", None) != self._generation:
            conn = None  # closed for a fork by _before_fork()
        if conn is not None and getattr(self._local, "inode", None) != self._inode():
            # The file was deleted or replaced under us: writes would go to an unlinked
            # inode and vanish at exit. Reopen at the configured path (schema recreated).
            logger.error("outbox %s was deleted or replaced while in use; reopening it", self)
            self._connections.pop(threading.current_thread(), None)
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            conn = None
            self._schema_ready = False
        if conn is None:
            # Opening (WAL switch) and migrating one thread at a time avoids spurious
            # "database is locked" between this process's own first connections.
            with self._schema_lock:
                conn = self._open()
                try:
                    if not self._schema_ready:
                        self._migrate(conn)
                        self._schema_ready = True
                except BaseException:
                    conn.close()
                    raise
            self._local.conn = conn
            self._local.inode = self._inode()
            self._local.generation = self._generation
            self._release_finished_threads()
            self._connections[threading.current_thread()] = conn
        return conn

    def _release_finished_threads(self) -> None:
        """Close connections whose thread has ended (short-lived threads would leak them)."""
        for thread, old in list(self._connections.items()):
            if not thread.is_alive():
                self._connections.pop(thread, None)
                with contextlib.suppress(sqlite3.Error):
                    old.close()

    # ------------------------------------------------------------------ fork safety
    # SQLite keeps per-process lock state for each open file; a child that inherits it
    # (from connections open at fork time) can see the file as locked forever or corrupt
    # the WAL index. So before fork() every operation is let finish and every connection
    # closed; the parent reopens lazily, the child starts clean.
    def _before_fork(self) -> None:
        self._gate.close()
        for conn in self._connections.values():
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._connections = {}
        self._generation += 1

    def _after_fork_in_parent(self) -> None:
        self._gate.open()

    def _after_fork_in_child(self) -> None:
        self._pid = os.getpid()
        self._gate = _Gate()
        self._local = threading.local()
        self._connections = {}
        self._schema_ready = False
        self._schema_lock = threading.Lock()  # a parent's thread may have held it

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Mark a connection in use (so a fork waits for it); per-thread: no serialising."""
        if os.getpid() != self._pid:
            self._after_fork_in_child()
        with self._gate.using():
            yield

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._errors(), self._lock():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._errors(), self._lock():
            yield self._connection()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            # A connection that hit a read-only or broken file stays that way: reopen next
            # time, so fixing the file (permissions, space) is enough to recover.
            self._forget_connection()
            raise OutboxError(self._explain(exc)) from exc
        except OSError as exc:  # creating the parent directory
            raise OutboxError(
                f"cannot create the outbox directory for {str(self.path)!r}: {exc.strerror}. "
                "Point outbox='sqlite:///...' at a writable location."
            ) from exc

    def _forget_connection(self) -> None:
        conn = self._connections.pop(threading.current_thread(), None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        where = f"outbox {str(self.path)!r}"
        if "readonly" in text or "read-only" in text:
            fix = "is read-only: make the file and its directory writable by this process"
        elif "disk is full" in text or "disk I/O" in text:
            fix = "cannot be written (disk full or I/O error): free space on its volume"
        elif "unable to open" in text:
            fix = "cannot be opened: check that the directory exists and is writable"
        elif "not a database" in text or "malformed" in text:
            fix = "is not a readable SQLite outbox: move it aside (rows in it are not lost)"
        elif "locked" in text or "busy" in text:
            fix = f"stayed locked for over {BUSY_TIMEOUT_MS // 1000} s by another process"
        else:
            fix = "failed"
        return f"{where} {fix} (sqlite: {text})."

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {str(self.path)!r} has schema version {version}, newer than "
                    f"this TrackLayer understands ({SCHEMA_VERSION}): upgrade tracklayer."
                )
            for script in MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection and those of finished threads (idempotent)."""
        if os.getpid() != self._pid:
            return
        # Another live thread may be inside a transaction on its connection: closing that
        # under it could crash SQLite. Those are released when their thread ends.
        self._forget_connection()
        self._release_finished_threads()

    # ------------------------------------------------------------------ writing
    def enqueue(self, conversions: Sequence[Conversion], *, now: float) -> list[bool]:
        """Insert one row per conversion; False where (pixel, event id, conversion id) exists."""
        inserted: list[bool] = []
        with self._write() as conn:
            held = {
                pixel for (pixel,) in conn.execute(
                    "SELECT pixel_id FROM pixel_pause WHERE kind = ?", (PAUSE_AUTH,)
                )
            }
            for conversion in conversions:
                state = conversion.initial_state
                if state == State.PENDING and conversion.pixel_id in held:
                    state = State.PAUSED
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO outbox (pixel_id, event, event_id, conversion_id, "
                    "record, state, created_at, updated_at, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversion.pixel_id, conversion.event, conversion.event_id,
                        conversion.conversion_id,
                        json.dumps(conversion.to_record(), separators=(",", ":")),
                        state, now, now, now,
                    ),
                )
                inserted.append(cursor.rowcount == 1)
        return inserted

    def claim(
        self, limit: int, *, lease_seconds: float, now: float,
        pixel_ids: Collection[str] | None = None,
    ) -> tuple[str, list[OutboxRow]]:
        """Lease up to ``limit`` due rows (oldest due first) to a new owner token.

        Due: ``pending``/``retrying`` whose time has come, ``in_flight`` whose lease ran out,
        and — once an auth pause's probe time has come — the pixel's ``paused`` rows (one
        batch: the probe). A claimed probe pushes the pause's probe time out by the lease so
        no other sender probes at the same time.
        """
        owner = uuid.uuid4().hex
        params: dict[str, Any] = {
            "now": now, "auth": PAUSE_AUTH, "limit": limit, "owner": owner,
            "until": now + lease_seconds, "paused": State.PAUSED,
        }
        only = ""
        if pixel_ids is not None:
            only = "AND pixel_id IN (" + ", ".join(
                f":p{i}" for i in range(len(pixel_ids))) + ")"
            params.update({f"p{i}": p for i, p in enumerate(pixel_ids)})
        with self._write() as conn:
            probes = [
                pixel for (pixel,) in conn.execute(
                    "SELECT pixel_id FROM pixel_pause WHERE kind = :auth AND until <= :now",
                    params,
                )
            ]
            due = [
                "state = 'pending' AND next_attempt_at <= :now",
                "state = 'retrying' AND next_attempt_at <= :now",
                "state = 'in_flight' AND lease_until <= :now",
            ]
            if probes:
                due.append("state = :paused AND pixel_id IN (" + ", ".join(
                    f":q{i}" for i in range(len(probes))) + ")")
                params.update({f"q{i}": p for i, p in enumerate(probes)})
            # One ordered, limited scan of outbox_due per state, then merged: an OR of the
            # states made SQLite collect and sort every due row on each claim (80 ms at a
            # 100,000 backlog, so a drain slowed down with the square of its size).
            scans = " UNION ALL ".join(
                f"SELECT * FROM (SELECT {_ROW_COLUMNS} FROM outbox WHERE {where} "
                f"AND NOT {_HELD} {only} ORDER BY next_attempt_at, id LIMIT :limit)"
                for where in due
            )
            rows = conn.execute(
                f"SELECT * FROM ({scans}) ORDER BY next_attempt_at, id LIMIT :limit", params
            ).fetchall()
            ids = [r[0] for r in rows]
            conn.executemany(
                "UPDATE outbox SET state = 'in_flight', lease_owner = ?, lease_until = ?, "
                "updated_at = ? WHERE id = ?",
                [(owner, now + lease_seconds, now, i) for i in ids],
            )
            claimed_probes = {r[1] for r in rows} & set(probes)
            conn.executemany(
                "UPDATE pixel_pause SET until = ? WHERE pixel_id = ?",
                [(now + lease_seconds, p) for p in claimed_probes],
            )
        return owner, [_row(r) for r in rows]

    def renew(self, lease_owner: str, row_ids: Sequence[int], *, until: float) -> None:
        """Extend the lease of rows still held by ``lease_owner``."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE outbox SET lease_until = ? WHERE id = ? AND lease_owner = ? "
                "AND state = 'in_flight'",
                [(until, i, lease_owner) for i in row_ids],
            )

    def finish(
        self, updates: Sequence[RowUpdate], entries: Sequence[DeliveryLogEntry], *, now: float
    ) -> int:
        """Apply outcomes (only where the lease is still the updater's) and append the log."""
        with self._write() as conn:
            cursor = conn.executemany(  # rowcount: the sum over all rows
                "UPDATE outbox SET state = ?, attempts = ?, "
                "first_attempt_at = COALESCE(first_attempt_at, ?), "
                "next_attempt_at = COALESCE(?, next_attempt_at), lease_owner = NULL, "
                "lease_until = NULL, last_status = ?, last_code = ?, last_error = ?, "
                "updated_at = ? WHERE id = ? AND lease_owner = ? AND state = 'in_flight'",
                [
                    (
                        u.state, u.attempts, u.first_attempt_at, u.next_attempt_at, u.status,
                        u.code, u.error, now, u.row_id, u.lease_owner,
                    )
                    for u in updates
                ],
            )
            applied = max(cursor.rowcount, 0)
            conn.executemany(
                f"INSERT INTO delivery_log ({_LOG_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_log_params(e) for e in entries],
            )
        return applied

    def pause(self, pause: PixelPause, *, now: float) -> None:
        """Record a pixel pause; an auth pause parks the pixel's waiting rows as ``paused``."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO pixel_pause "
                "(pixel_id, kind, reason, until, since, probes, status, code) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pause.pixel_id, pause.kind, pause.reason, pause.until, pause.since,
                    pause.probes, pause.status, pause.code,
                ),
            )
            if pause.kind == PAUSE_AUTH:
                conn.execute(
                    "UPDATE outbox SET state = 'paused', updated_at = ? "
                    "WHERE pixel_id = ? AND state IN ('pending', 'retrying')",
                    (now, pause.pixel_id),
                )

    def resume(self, pixel_id: str, *, now: float) -> int:
        """Lift the pixel's pause and make its ``paused`` rows due now."""
        with self._write() as conn:
            conn.execute("DELETE FROM pixel_pause WHERE pixel_id = ?", (pixel_id,))
            cursor = conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, updated_at = ? "
                "WHERE pixel_id = ? AND state = 'paused'",
                (now, now, pixel_id),
            )
            return cursor.rowcount

    def retry_dead(
        self, *, now: float, conversion_ids: Collection[str] | None = None,
        event: str | None = None,
    ) -> int:
        """Dead rows (filtered by ids and/or event) become ``pending`` with a fresh budget."""
        where = ["state = 'dead'"]
        params: list[Any] = [now, now]
        if conversion_ids is not None:
            where.append(f"conversion_id IN ({', '.join('?' * len(conversion_ids))})")
            params.extend(conversion_ids)
        if event is not None:
            where.append("event = ?")
            params.append(event)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, first_attempt_at = NULL, "
                f"next_attempt_at = ?, updated_at = ? WHERE {' AND '.join(where)}",
                params,
            )
            return cursor.rowcount

    def purge(self, *, done_before: float) -> int:
        """Delete finished rows (sent, dry-run, skipped) and their log older than the cut."""
        done = ", ".join(f"'{s}'" for s in State.DONE)
        with self._write() as conn:
            conn.execute(
                "DELETE FROM delivery_log WHERE conversion_id IN (SELECT conversion_id "
                f"FROM outbox WHERE state IN ({done}) AND updated_at < ?) "
                "AND finished_at < ?",
                (done_before, done_before),
            )
            cursor = conn.execute(
                f"DELETE FROM outbox WHERE state IN ({done}) AND updated_at < ?",
                (done_before,),
            )
            return cursor.rowcount

    # ------------------------------------------------------------------ reading
    def pauses(self) -> dict[str, PixelPause]:
        """Every recorded pixel pause."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT pixel_id, kind, reason, until, since, probes, status, code "
                "FROM pixel_pause"
            ).fetchall()
        return {r[0]: PixelPause(*r) for r in rows}

    def unfinished(self, now: float) -> tuple[int, float | None]:
        """How many rows ``flush()`` waits for, and the earliest moment one of them is due."""
        with self._read() as conn:
            # An in-flight row is being answered right now, not at its lease expiry: were it
            # due then, flush() would give up on every batch that is merely on the wire.
            count, due = conn.execute(
                "SELECT COUNT(*), MIN(CASE WHEN state = 'in_flight' THEN ? "
                f"ELSE {_WAITING_DUE} END) FROM outbox "
                "WHERE state IN ('pending', 'in_flight', 'retrying')",
                (now,),
            ).fetchone()
        return int(count), due

    def next_due(self, now: float, pixel_ids: Collection[str] | None = None) -> float | None:
        """The earliest moment a claim could return something (lease expiries included)."""
        only, params = "", list(pixel_ids or ())
        if pixel_ids is not None:
            only = f"AND pixel_id IN ({', '.join('?' * len(pixel_ids))})"
        with self._read() as conn:
            (due,) = conn.execute(
                "SELECT MIN(CASE WHEN state = 'in_flight' THEN lease_until "
                f"ELSE {_WAITING_DUE} END) FROM outbox "
                f"WHERE state IN ('pending', 'in_flight', 'retrying', 'paused') {only}",
                params,
            ).fetchone()
        return float(due) if due is not None else None

    def counts(self) -> dict[str, dict[str, int]]:
        """``{event: {state: n}}`` over the whole outbox."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT event, state, COUNT(*) FROM outbox GROUP BY event, state"
            ).fetchall()
        result: dict[str, dict[str, int]] = {}
        for event, state, n in rows:
            result.setdefault(event, {})[state] = n
        return result

    def oldest_unfinished(self) -> float | None:
        """``created_at`` of the oldest row not yet delivered (paused rows included)."""
        with self._read() as conn:
            (oldest,) = conn.execute(
                "SELECT MIN(created_at) FROM outbox "
                "WHERE state IN ('pending', 'in_flight', 'retrying', 'paused')"
            ).fetchone()
        return float(oldest) if oldest is not None else None

    def last_errors(self) -> dict[str, DeliveryLogEntry]:
        """The latest failed attempt (non-2xx, timeout or refused) for each pixel."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_LOG_COLUMNS} FROM delivery_log WHERE id IN ("
                "SELECT MAX(id) FROM delivery_log WHERE state IN "
                "('retrying', 'dead', 'paused') GROUP BY pixel_id)"
            ).fetchall()
        return {r[2]: _entry(r) for r in rows}

    def rows(self, conversion_id: str) -> list[OutboxRow]:
        """Every row using this conversion id."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM outbox WHERE conversion_id = ? ORDER BY id",
                (conversion_id,),
            ).fetchall()
        return [_row(r) for r in rows]

    def find(
        self, *, states: Collection[str] | None = None, event: str | None = None,
        created_since: float | None = None, updated_since: float | None = None,
        updated_before: float | None = None,
    ) -> list[OutboxRow]:
        """Rows matching every given filter, oldest first (reports, ``retry-dead --since``)."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        for clause, value in (
            ("event = ?", event),
            ("created_at >= ?", created_since),
            ("updated_at >= ?", updated_since),
            ("updated_at < ?", updated_before),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM outbox WHERE {' AND '.join(where)} ORDER BY id",
                params,
            ).fetchall()
        return [_row(r) for r in rows]

    def attempts(self, conversion_id: str) -> list[DeliveryLogEntry]:
        """The delivery log of a conversion id, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_LOG_COLUMNS} FROM delivery_log WHERE conversion_id = ? ORDER BY id",
                (conversion_id,),
            ).fetchall()
        return [_entry(r) for r in rows]


def _row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        id=r[0], pixel_id=r[1], event=r[2], event_id=r[3], conversion_id=r[4],
        record=json.loads(r[5]), state=r[6], attempts=r[7], created_at=r[8],
        updated_at=r[9], first_attempt_at=r[10], next_attempt_at=r[11], lease_owner=r[12],
        last_status=r[13], last_code=r[14], last_error=r[15],
    )


def _log_params(e: DeliveryLogEntry) -> tuple[Any, ...]:
    return (
        e.conversion_id, e.event, e.pixel_id, e.attempt, e.state, e.started_at,
        e.finished_at, e.http_status, e.error_code, e.error_message, e.debug_id,
        _names_json(tuple(e.identifiers)), e.latency_ms,
    )


@functools.lru_cache(maxsize=64)
def _names_json(identifiers: tuple[str, ...]) -> str:
    # A few combinations of identifier names recur on every row of a batch.
    return json.dumps(list(identifiers))


def _entry(r: Sequence[Any]) -> DeliveryLogEntry:
    return DeliveryLogEntry(
        conversion_id=r[0], event=r[1], pixel_id=r[2], attempt=r[3], state=r[4],
        started_at=r[5], finished_at=r[6], http_status=r[7], error_code=r[8],
        error_message=r[9], debug_id=r[10], identifiers=tuple(json.loads(r[11])),
        latency_ms=r[12],
    )


class _Gate:
    """Lets any number of operations run at once, except while a fork is being prepared."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Wait for running operations and hold new ones back (until ``open()``)."""
        with self._cond:
            self._closed = True
            while self._active:
                self._cond.wait()

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


_outboxes: weakref.WeakSet[SQLiteOutbox] = weakref.WeakSet()


def _before_fork() -> None:
    for outbox in list(_outboxes):
        if outbox._pid == os.getpid():
            outbox._before_fork()


def _after_fork_in_parent() -> None:
    for outbox in list(_outboxes):
        if outbox._pid == os.getpid():
            outbox._after_fork_in_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)
