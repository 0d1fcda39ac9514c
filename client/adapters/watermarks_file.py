"""The agent's watermarks on disk: one small JSON file in its data folder, replaced
atomically, so a restart keeps the day's start equity, the peak and the stop-out."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.core.risk import RejectCode, StopOutState
from mt5fleet.client.core.watermarks import Watermarks


def load(path: Path) -> Watermarks:
    try:
        raw = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return Watermarks()  # first start, or a torn file: start afresh rather than refuse to run
    stop = raw.pop("stop_out", {})
    code = stop.pop("code", None)
    return Watermarks(**raw, stop_out=StopOutState(**stop, code=RejectCode(code) if code else None))


def save(path: Path, marks: Watermarks) -> None:
    data = dataclasses.asdict(marks)
    data["stop_out"]["code"] = marks.stop_out.code.value if marks.stop_out.code else None
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)  # atomic: a crash leaves the old file or the new one
    except OSError as exc:  # the old file stands; the caller keeps the marks and saves again
        raise DiskUnavailable(f"the watermarks {path}", exc) from exc
