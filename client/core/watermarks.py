"""The account figures the risk rules measure against, kept across agent restarts: the
equity at the start of the trading day, the peak equity, the stop-out state and the
weekend auto-close. ``advance`` is pure; ``load``/``save`` keep one small JSON file."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mt5fleet.client.core.risk import RejectCode, StopOutState
from mt5fleet.proto.domain.sessions import trading_day_start_ms

_WEEK_MS = 7 * 86_400_000


@dataclass(frozen=True)
class Watermarks:
    day_start_ms: int = 0
    day_start_equity: float = 0.0
    peak_equity: float = 0.0
    stop_out: StopOutState = field(default_factory=StopOutState)
    weekend_closed_at_ms: int = 0

    def advance(self, equity: float, now_ms: int) -> Watermarks:
        """A new trading day starts from today's equity; the peak only rises."""
        day = trading_day_start_ms(now_ms)
        start = (day, equity) if day != self.day_start_ms else (self.day_start_ms, self.day_start_equity)
        return dataclasses.replace(self, day_start_ms=start[0], day_start_equity=start[1],
                                   peak_equity=max(self.peak_equity, equity))

    def weekend_done(self, now_ms: int) -> bool:
        """Auto-closed already within this weekend's lead-up (the same week)."""
        return 0 < now_ms - self.weekend_closed_at_ms < _WEEK_MS / 2


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
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)  # atomic: a crash leaves the old file or the new one
