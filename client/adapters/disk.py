"""The agent's data folder failing to take a write (disk full, read-only, I/O error), as one
error callers catch by meaning: ``DiskUnavailable`` is *retryable*. Nothing was written by
the call that raised it (sqlite rolls the transaction back), so the caller keeps what it
meant to write and tries again; the agent stops sending orders meanwhile, because an order
whose ledger entry is not on disk could be sent twice after a restart.

Each store keeps its own ``WriteHealth``: when its writes started failing and why, cleared
by the next write that succeeds, for the status page and ``/readyz``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable


class DiskUnavailable(Exception):
    """A write to the agent's data folder failed; retry later (nothing was written)."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"cannot write {what}: {cause}")
        self.what = what


# sqlite's own failures to write (SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, a lock held
# too long) arrive as OperationalError; a JSON file's as OSError.
WRITE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, OSError)


class WriteHealth:
    """Since when (monotonic seconds) a store's writes fail, and the last error."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.failing_since: float | None = None
        self.error = ""

    def failed(self, error: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = self._monotonic()
        self.error = str(error)

    def succeeded(self) -> None:
        self.failing_since, self.error = None, ""

    def failing_for(self, now: float) -> float:
        return 0.0 if self.failing_since is None else max(now - self.failing_since, 1e-3)
