"""The account figures the risk rules measure against, kept across agent restarts: the
equity at the start of the trading day, the peak equity, the stop-out state and the
weekend auto-close. Pure; ``mt5fleet.client.adapters.watermarks_file`` keeps them on disk."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mt5fleet.client.core.risk import StopOutState
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
