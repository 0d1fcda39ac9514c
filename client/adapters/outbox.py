"""Messages that must never be lost, held on disk until JetStream has stored them.

Account updates, execution reports and symbol specs are appended here first; a publisher
sends ``pending()`` oldest first and calls ``mark_sent(seq)`` only after JetStream's
acknowledgement. A crash between the two re-sends the entry, and the message id
(``Nats-Msg-Id``) makes JetStream drop the second copy, so delivery is at least once on
the wire and exactly once in the stream.

Every call is one short autocommit statement or one small transaction, so the asyncio
loop calling it is never held for long. The file is bounded (``OutboxFull``): a week
without NATS must end in a clear error, not a full disk or silently dropped reports.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mt5fleet.client.adapters.disk import WRITE_ERRORS, DiskUnavailable, WriteHealth

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# A row costs more than its payload: the other columns, the index and page overhead.
_ROW_OVERHEAD = 64
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    -- AUTOINCREMENT: a seq is never reused, even after the newest rows were deleted,
    -- so the order of appends survives any mix of appends, sends and restarts.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used."""


class OutboxFull(OutboxError):
    """Appending would exceed the disk budget; nothing was written."""


class OutboxUnavailable(DiskUnavailable, OutboxError):
    """The file refused a write (disk full, read-only, I/O error); nothing was written: retry."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    subject: str
    msg_id: str
    kind: str
    payload: bytes
    created_at_ms: int


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _row_size(subject: str, msg_id: str, kind: str, payload: bytes) -> int:
    return len(payload) + len(subject) + len(msg_id) + len(kind) + _ROW_OVERHEAD


class Outbox:
    """A FIFO of (subject, msg_id, payload, kind) in one sqlite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._clock_ms = clock_ms
        # The agent may call from the event loop or an executor thread, never both at once:
        # the lock makes that a rule rather than a hope.
        self._lock = threading.Lock()
        self.write_health = WriteHealth()
        self._db = _open(self.path)
        self._depth, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(subject) + LENGTH(msg_id) + LENGTH(kind)), 0)"
            " FROM outbox"
        ).fetchone()
        self._bytes += self._depth * _ROW_OVERHEAD

    def append(self, subject: str, msg_id: str, payload: bytes, kind: str) -> int:
        """Store one message durably; its seq is larger than every earlier one's."""
        if not subject or not msg_id:
            raise ValueError("subject and msg_id must not be empty (msg_id is the JetStream dedupe key)")
        size = _row_size(subject, msg_id, kind, payload)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise OutboxFull(
                    f"outbox {self.path} is full: {self._depth} messages, {self._bytes} of {self.max_bytes} bytes "
                    f"used; cannot add {kind} {msg_id} ({len(payload)} bytes) until NATS takes some"
                )
            cursor = self._write(
                f"{kind} {msg_id}",
                "INSERT INTO outbox (subject, msg_id, kind, payload, created_at_ms) VALUES (?, ?, ?, ?, ?)",
                (subject, msg_id, kind, bytes(payload), self._clock_ms()),
            )
            self._depth += 1
            self._bytes += size
            return int(cursor.lastrowid or 0)

    def pending(self, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` unsent entries, oldest first (send them in this order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, subject, msg_id, kind, payload, created_at_ms FROM outbox ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxEntry(seq, subject, msg_id, kind, bytes(payload), created) for
                seq, subject, msg_id, kind, payload, created in rows]

    def mark_sent(self, seq: int) -> None:
        """Forget an entry JetStream acknowledged. Marking it again, or an unknown seq, is a no-op."""
        with self._lock:  # the lock keeps the size lookup and the delete together
            row = self._db.execute(
                "SELECT LENGTH(payload) + LENGTH(subject) + LENGTH(msg_id) + LENGTH(kind) FROM outbox WHERE seq = ?",
                (seq,),
            ).fetchone()
            if row is None:
                return
            self._write(f"the removal of entry {seq}", "DELETE FROM outbox WHERE seq = ?", (seq,))
            self._depth -= 1
            self._bytes -= row[0] + _ROW_OVERHEAD

    def depth(self) -> int:
        return self._depth

    def size_bytes(self) -> int:
        """The budget used, as counted against ``max_bytes``."""
        return self._bytes

    def oldest_age_s(self, now_ms: int) -> float:
        """Seconds the oldest unsent entry has waited (0.0 when empty): the outbox-lag metric."""
        with self._lock:
            row = self._db.execute("SELECT created_at_ms FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, (now_ms - row[0]) / 1000)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, what: str, sql: str, parameters: tuple) -> sqlite3.Cursor:
        """One autocommit statement; a refused write is ``OutboxUnavailable`` (retryable)."""
        try:
            cursor = self._db.execute(sql, parameters)
        except WRITE_ERRORS as exc:
            self.write_health.failed(exc)
            raise OutboxUnavailable(f"{what} to the outbox {self.path}", exc) from exc
        self.write_health.succeeded()
        return cursor

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: autocommit, so a single INSERT is its own short transaction.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise OutboxError(f"{path}: outbox schema {version} is newer than this agent's ({_SCHEMA_VERSION})")
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a commit is in the WAL file (the OS page cache) when it returns,
        # so a killed or crashed process loses nothing; only a power cut or OS crash can
        # lose the last commits. FULL would fsync every append and stall the event loop on a
        # slow VPS disk while NATS is down and appends pile up. Execution reports are also
        # kept by the command ledger (synchronous=FULL) until acknowledged, and account
        # snapshots are re-read from MT5 on start, so that narrow window loses no fact.
        db.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows leave free pages that later appends reuse; cap the WAL's size after
        # checkpoints so a long outage does not leave a large file behind for ever.
        db.execute("PRAGMA journal_size_limit=8388608")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise OutboxError(f"{path}: not a usable outbox database ({exc})") from exc
    return db
