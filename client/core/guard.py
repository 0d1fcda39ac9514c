"""The agent's account guard: decisions about the whole account rather than one command.

After each account reading the agent advances its watermarks and asks ``guard_account``
whether to close everything: once per trading day after a breach of the daily loss or
drawdown limit (the daily stop-out), and once a week before the Friday close for users who
hold nothing over the weekend. ``risk_context`` puts what the agent sees when a command
arrives into the form the rules of ``risk.check`` read. Pure: the caller passes the time,
the account figures and the quote; the app layer reads them and submits the close-alls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from mt5fleet.client.core.risk import (
    RejectCode,
    RiskContext,
    RiskLimits,
    StopOutState,
    daily_loss_breach,
    drawdown_breach,
)
from mt5fleet.client.core.watermarks import Watermarks
from mt5fleet.proto.domain.calendar import EMPTY as NO_CALENDAR
from mt5fleet.proto.domain.calendar import Calendar, NewsWindow
from mt5fleet.proto.domain.ids import command_id_for, stop_out_key
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.sessions import (
    is_market_open,
    market_state,
    minutes_to_weekly_close,
    next_trading_day_start_ms,
    trading_day_start_ms,
)

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class CloseAll:
    """Close every position now. ``key`` names the occasion (this stop-out day, this
    weekend), so a repeated decision yields the same command id and executes once."""

    key: str
    reason: str

    def command_id(self, user_id: str) -> str:
        return command_id_for(self.key, user_id, "close-all")


@dataclass(frozen=True, slots=True)
class GuardStep:
    marks: Watermarks
    closes: tuple[CloseAll, ...] = ()


def guard_account(marks: Watermarks, limits: RiskLimits, *, auto_close_friday: bool, equity: float,
                  now_ms: int) -> GuardStep:
    """The watermarks after this equity reading, and what to close because of it."""
    marks = marks.advance(equity, now_ms)
    closes: list[CloseAll] = []
    state, close_now = evaluate_stop_out(marks.stop_out, limits, equity, marks.day_start_equity,
                                         marks.peak_equity, now_ms)
    if state != marks.stop_out:
        marks = replace(marks, stop_out=state)
    if close_now:
        closes.append(CloseAll(stop_out_key(state.handled_day_ms), f"stop-out: {state.reason}"))
    if should_auto_close_for_weekend(now_ms, auto_close_friday=auto_close_friday,
                                     already_done_for_week=marks.weekend_done(now_ms)):
        marks = replace(marks, weekend_closed_at_ms=now_ms)
        closes.append(CloseAll(f"weekend:{now_ms // _DAY_MS}", "auto-close before the weekend"))
    return GuardStep(marks, tuple(closes))


def risk_context(marks: Watermarks, *, at_ms: int, equity: float, balance: float, position_symbols: Sequence[str],
                 spec: SymbolSpecInfo | None, bid: float = 0.0, ask: float = 0.0, netting: bool,
                 calendar: Calendar = NO_CALENDAR, news_window: NewsWindow | None = None,
                 account_company: str = "", account_server: str = "") -> RiskContext:
    """``position_symbols``: the broker symbol of each open position; ``spec``/``bid``/``ask``:
    the command's symbol as the terminal shows it, None/0 when it has none (CLOSE_ALL);
    ``account_company``/``account_server``: the account the terminal is logged into."""
    broker = spec.broker_symbol if spec else None
    return RiskContext(
        now_ms=at_ms, equity=equity, balance=balance,
        # Before the first account reading the watermarks know nothing: today's equity is the best start.
        day_start_equity=marks.day_start_equity or equity, peak_equity=max(marks.peak_equity, equity),
        open_positions=len(position_symbols), symbol_positions=sum(1 for s in position_symbols if s == broker),
        bid=bid, ask=ask, spread_points=round((ask - bid) / spec.point) if spec else 0.0, spec=spec,
        market=market_state(at_ms), stop_out=marks.stop_out, netting=netting, calendar=calendar,
        news_window=news_window or calendar.window, account_company=account_company,
        account_server=account_server)


# ----------------------------------------------------------------------------- stop-out


def evaluate_stop_out(state: StopOutState, limits: RiskLimits, equity: float, day_start_equity: float,
                      peak_equity: float, now_ms: int) -> tuple[StopOutState, bool]:
    """Returns the new state and whether to close every position now (once per breach)."""
    if state.is_active(now_ms):
        return state, False
    code, reason = _breach(limits, equity, day_start_equity, peak_equity)
    day = trading_day_start_ms(now_ms)
    if code is None or state.handled_day_ms == day:
        return state, False
    stopped = StopOutState(blocked_until_ms=next_trading_day_start_ms(now_ms), handled_day_ms=day,
                           triggered_at_ms=now_ms, code=code, reason=reason)
    return stopped, True


def reset_stop_out(state: StopOutState) -> StopOutState:
    """An explicit reset lifts the block at once. The day stays handled, so the same
    breach does not close everything again; the daily loss and drawdown rules of
    :func:`check` still refuse new positions until the limits allow them."""
    return replace(state, blocked_until_ms=0)


def _breach(limits: RiskLimits, equity: float, day_start_equity: float,
            peak_equity: float) -> tuple[RejectCode | None, str]:
    daily = daily_loss_breach(limits, equity, day_start_equity)
    if daily is not None:
        return RejectCode.DAILY_LOSS, daily
    deep = drawdown_breach(limits, equity, peak_equity)
    if deep is not None:
        return RejectCode.DRAWDOWN, deep
    return None, ""


# ------------------------------------------------------------------------------ weekend


def should_auto_close_for_weekend(now_ms: int, *, auto_close_friday: bool, lead_minutes: float = 15,
                                  already_done_for_week: bool) -> bool:
    """Close everything ``lead_minutes`` before the Friday 17:00 New York close, once a
    week, for users who asked not to hold positions over the weekend gap."""
    if not auto_close_friday or already_done_for_week or not is_market_open(now_ms):
        return False
    return minutes_to_weekly_close(now_ms) <= lead_minutes

