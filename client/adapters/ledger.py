"""The command ledger: what makes execution exactly-once across restarts and crashes.

For each command the agent records, in order:

1. ``begin()`` — the intent, durably, *before* ``order_send``. A second ``begin()`` with
   the same id returns False: the command is a duplicate (a redelivery, a catch-up replay).
2. ``record_outcome()`` — the status and the serialized ExecutionReport.
3. ``mark_reported()`` — once JetStream stored the report (the end-to-end acknowledgement).

After a crash, ``in_flight()`` lists commands begun without an outcome: ``order_send`` may
or may not have reached the broker, so the agent looks in MT5 (positions, orders, history
by comment and magic) before deciding. ``unreported()`` lists outcomes whose report must
be published again. ``last_stream_seq()`` is where the catch-up consumer resumes.
"""

from __future__ import annotations

import contextlib
import enum
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mt5fleet.client.adapters.disk import WRITE_ERRORS, DiskUnavailable, WriteHealth

# The commands stream keeps 7 days and dedupes for 1 (proto.subjects): keeping ledger
# entries 30 days means no command the stream can still deliver is ever forgotten.
DEFAULT_RETENTION_MS = 30 * 86_400_000
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    magic INTEGER NOT NULL,
    stream_seq INTEGER,
    received_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    report BLOB,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state);
-- The stream high-water mark lives apart from the rows so that prune() cannot lower it.
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_COLUMNS = "command_id, magic, stream_seq, received_at_ms, state, status, report, updated_at_ms"


class LedgerError(RuntimeError):
    """A ledger call that contradicts what the ledger knows (a bug in the caller), or a bad file."""


class LedgerUnavailable(DiskUnavailable, LedgerError):
    """The file refused a write (disk full, read-only, I/O error); the transaction was rolled
    back, nothing was recorded: do not execute, retry later."""


class LedgerState(enum.StrEnum):
    BEGUN = "BEGUN"          # intent recorded; order_send may or may not have happened
    DONE = "DONE"            # outcome and report stored; report not yet acknowledged
    REPORTED = "REPORTED"    # JetStream stored the report: nothing left to do


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    command_id: str
    magic: int
    stream_seq: int | None
    received_at_ms: int
    state: LedgerState
    status: str | None          # e.g. "FILLED"; None while BEGUN
    report: bytes | None        # serialized ExecutionReport; None while BEGUN
    updated_at_ms: int


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _entry(row: tuple) -> LedgerEntry:
    command_id, magic, stream_seq, received, state, status, report, updated = row
    return LedgerEntry(command_id, magic, stream_seq, received, LedgerState(state), status,
                       None if report is None else bytes(report), updated)


class CommandLedger:
    """One sqlite file of command ids and what became of them."""

    def __init__(self, path: str | Path, *, clock_ms: Callable[[], int] = _wall_clock_ms) -> None:
        self.path = Path(path)
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self.write_health = WriteHealth()
        self._db = _open(self.path)

    def get(self, command_id: str) -> LedgerEntry | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)).fetchone()
        return None if row is None else _entry(row)

    def begin(self, command_id: str, *, magic: int, stream_seq: int | None, received_at_ms: int) -> bool:
        """Record the intent to execute; False if the id is already known (do not execute)."""
        if not command_id:
            raise ValueError("command_id must not be empty")
        with self._lock, self._transaction():
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO commands (command_id, magic, stream_seq, received_at_ms, state, updated_at_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (command_id, magic, stream_seq, received_at_ms, LedgerState.BEGUN.value, self._clock_ms()),
            ).rowcount == 1
            if stream_seq is not None:
                self._raise_mark(stream_seq)
        return inserted

    def abandon(self, command_id: str) -> bool:
        """Forget a begun command nothing of which reached the broker (the terminal dropped
        before ``order_send``), so that it can be executed when the terminal is back. Only
        an entry without an outcome goes; True if one did."""
        with self._lock, self._transaction():
            return self._db.execute(
                "DELETE FROM commands WHERE command_id = ? AND state = ?", (command_id, LedgerState.BEGUN.value),
            ).rowcount == 1

    def advance_stream_seq(self, stream_seq: int) -> None:
        """Note a stream message handled without a ledger entry (undecodable, invalid), so
        catch-up does not read it again after every reconnect. Never lowers the mark."""
        with self._lock, self._transaction():
            self._raise_mark(stream_seq)

    def record_outcome(self, command_id: str, status: str, report: bytes) -> None:
        """Store the outcome of a begun command. Recording the same outcome again is a no-op;
        a different outcome for a finished command is refused: the first report stands."""
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT state, status, report FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()
            if row is None:
                raise LedgerError(f"command {command_id}: outcome recorded without begin()")
            state, old_status, old_report = row
            if state != LedgerState.BEGUN:
                if (old_status, bytes(old_report)) == (status, bytes(report)):
                    return
                raise LedgerError(f"command {command_id}: already {state} with status {old_status}, not {status}")
            self._db.execute(
                "UPDATE commands SET state = ?, status = ?, report = ?, updated_at_ms = ? WHERE command_id = ?",
                (LedgerState.DONE.value, status, bytes(report), self._clock_ms(), command_id),
            )

    def mark_reported(self, command_id: str) -> None:
        """JetStream stored the report. Idempotent; refused before an outcome exists."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT state FROM commands WHERE command_id = ?", (command_id,)).fetchone()
            if row is None or row[0] == LedgerState.BEGUN:
                known = "unknown" if row is None else "has no outcome yet"
                raise LedgerError(f"command {command_id}: cannot be marked reported, it is {known}")
            self._db.execute(
                "UPDATE commands SET state = ?, updated_at_ms = ? WHERE command_id = ? AND state = ?",
                (LedgerState.REPORTED.value, self._clock_ms(), command_id, LedgerState.DONE.value),
            )

    def secret_key(self, name: str) -> bytes:
        """A random 32-byte key made on first use and kept with the ledger (which the agent's
        data folder already protects): the same key across restarts, known to no one else."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT value FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                key = secrets.token_bytes(32)
                self._db.execute("INSERT INTO keys (name, value) VALUES (?, ?)", (name, key))
                return key
        return bytes(row[0])

    def in_flight(self) -> list[LedgerEntry]:
        """Begun without an outcome, in the order they were begun."""
        return self._in_state(LedgerState.BEGUN)

    def unreported(self) -> list[LedgerEntry]:
        """Outcomes whose report JetStream has not acknowledged, in the order begun."""
        return self._in_state(LedgerState.DONE)

    def last_stream_seq(self) -> int:
        """The highest commands-stream sequence handled; 0 when none."""
        with self._lock:
            row = self._db.execute("SELECT value FROM marks WHERE name = 'stream_seq'").fetchone()
        return 0 if row is None else int(row[0])

    def prune(self, older_than_ms: int) -> int:
        """Delete reported entries received and last updated before the unix-ms cutoff
        ``older_than_ms`` (e.g. now - DEFAULT_RETENTION_MS); returns how many went.
        In-flight and unreported entries are never pruned: they still have work to do."""
        with self._lock, self._transaction():
            return self._db.execute(
                "DELETE FROM commands WHERE state = ? AND received_at_ms < ? AND updated_at_ms < ?",
                (LedgerState.REPORTED.value, older_than_ms, older_than_ms),
            ).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CommandLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _in_state(self, state: LedgerState) -> list[LedgerEntry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM commands WHERE state = ? ORDER BY rowid", (state.value,)
            ).fetchall()
        return [_entry(row) for row in rows]

    def _raise_mark(self, stream_seq: int) -> None:
        self._db.execute(
            "INSERT INTO marks (name, value) VALUES ('stream_seq', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
            (stream_seq,),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The statements inside as one atomic (and durable, under FULL) commit. A write the
        file refuses rolls everything back and raises ``LedgerUnavailable``."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # may fail too (SQLITE_FULL): then roll back below
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except WRITE_ERRORS as exc:
            self.write_health.failed(exc)
            raise LedgerUnavailable(f"the command ledger {self.path}", exc) from exc
        self.write_health.succeeded()


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise LedgerError(f"{path}: ledger schema {version} is newer than this agent's ({_SCHEMA_VERSION})")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: begin() must be on disk before order_send, even across a power cut or an
        # OS crash; losing it would let a replayed command execute twice. Commands are
        # rare (a few per minute), so one fsync each costs nothing that matters.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise LedgerError(f"{path}: not a usable ledger database ({exc})") from exc
    return db
