"""The risk state as the trader reads it on the status page: how much of today's loss
limit is used, the drawdown from the peak, a stop-out in force, close-only or paused, and
whether the market takes new positions now. Pure: from the watermarks, the limits, the
equity and the time the caller passes; the same figures ``risk.check`` decides with."""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.client.core.risk import RiskLimits, drawdown
from mt5fleet.client.core.watermarks import Watermarks
from mt5fleet.proto.domain.sessions import market_state


@dataclass(frozen=True, slots=True)
class RiskState:
    daily_loss: float              # account money lost since the trading day began (negative: won)
    daily_loss_limit: float        # 0: no limit
    daily_loss_used: float | None  # fraction of the limit (None: no limit)
    drawdown: float                # fraction of the peak equity lost
    drawdown_limit: float          # fraction (0: no limit)
    drawdown_used: float | None    # fraction of the limit (None: no limit)
    stopped_out: bool
    stopped_until_ms: int
    stop_out_reason: str
    close_only: bool
    paused: bool
    market: str                    # open, rollover or closed
    market_detail: str             # sessions now, or when it opens
    new_positions: bool            # would a new position pass these rules now
    summary: str                   # one line in plain words


def risk_state(marks: Watermarks, limits: RiskLimits, *, equity: float, now_ms: int) -> RiskState:
    loss = marks.day_start_equity - equity if marks.day_start_equity else 0.0
    lost = drawdown(equity, marks.peak_equity)
    market = market_state(now_ms)
    stopped = marks.stop_out.is_active(now_ms)
    if not market.is_open:
        session, detail = "closed", "opens Sunday 17:00 New York"
    elif market.in_rollover:
        session, detail = "rollover", "17:00 New York rollover: no new positions"
    else:
        session, detail = "open", ", ".join(market.active_sessions) or "open"
    blocked = [why for why, on in (("paused", limits.paused), ("close-only", limits.close_only),
                                   ("stopped out", stopped), (f"market {session}", session != "open")) if on]
    return RiskState(
        daily_loss=loss, daily_loss_limit=limits.max_daily_loss,
        daily_loss_used=max(loss, 0.0) / limits.max_daily_loss if limits.max_daily_loss else None,
        drawdown=lost, drawdown_limit=limits.max_drawdown,
        drawdown_used=lost / limits.max_drawdown if limits.max_drawdown else None,
        stopped_out=stopped, stopped_until_ms=marks.stop_out.blocked_until_ms if stopped else 0,
        stop_out_reason=marks.stop_out.reason if stopped else "", close_only=limits.close_only,
        paused=limits.paused, market=session, market_detail=detail, new_positions=not blocked,
        summary="new positions allowed" if not blocked else f"no new positions: {', '.join(blocked)}")
