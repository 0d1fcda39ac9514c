"""The status page's chart history on disk: one JSON file in the agent's data folder, so an
agent restarted (a Windows update, a VPS reboot) shows the equity curve and the prices it
had, not an empty chart.

Written whole and replaced atomically (a temporary file, fsync, rename): a crash leaves the
old file or the new one, never half of one. Bounded: the histories themselves are (their
capacities, ``MAX_SNAPSHOT_SYMBOLS``), and a file beyond ``MAX_BYTES`` is not even read.
A file that cannot be used is ``ChartFileUnusable``: the caller reports it, counts it and
starts with empty charts; the file is moved aside (``.corrupt``) for a look, not deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from mt5fleet.client.adapters.disk import DiskUnavailable

# Far above what the histories' capacities make (a few MB at most): a larger file is not ours.
MAX_BYTES = 32 * 1024 * 1024


class ChartFileUnusable(Exception):
    """The file is there but is not a chart history this agent can read."""

    def __init__(self, path: Path, reason: str, moved_to: Path | None = None) -> None:
        kept = f"; moved aside to {moved_to.name}" if moved_to else ""
        super().__init__(f"the chart history {path} is unusable ({reason}): the charts start empty{kept}")
        self.reason, self.moved_to = reason, moved_to


def load(path: Path) -> Any | None:
    """The parsed snapshot, or None when there is no file yet (a first start)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_BYTES:
        raise ChartFileUnusable(path, f"{size} bytes, more than {MAX_BYTES}", _move_aside(path))
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:  # torn, truncated or not JSON at all
        raise ChartFileUnusable(path, f"not JSON: {str(exc)[:80]}", _move_aside(path)) from None
    except OSError as exc:
        raise ChartFileUnusable(path, f"cannot be read: {exc}") from None


def unusable(path: Path, reason: str) -> ChartFileUnusable:
    """A file that parsed but holds no history this agent wrote (``core.history`` said why)."""
    return ChartFileUnusable(path, reason, _move_aside(path))


def _move_aside(path: Path) -> Path | None:
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return aside


def save(path: Path, snapshot: Any) -> int:
    """Replace the file atomically; the bytes written. ``DiskUnavailable`` when the data
    folder refuses (the old file stands; the next save tries again)."""
    body = json.dumps(snapshot, separators=(",", ":"), allow_nan=False).encode()
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise DiskUnavailable(f"the chart history {path}", exc) from exc
    return len(body)
