"""The agent's account guard, pure: the daily stop-out, the weekend auto-close, one step of
both per account reading (``guard_account``), and the context the risk rules see.

The scene: a 10,000 USD account on Tuesday 9 January 2024 in New York (the trading day
starts at 17:00 the evening before), EURUSD quoted 1.08500/1.08512.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mt5fleet.client.core.guard import (
    CloseAll,
    evaluate_stop_out,
    guard_account,
    risk_context,
    should_auto_close_for_weekend,
)
from mt5fleet.client.core.risk import RejectCode, RiskLimits, StopOutState
from mt5fleet.client.core.watermarks import Watermarks
from mt5fleet.proto.domain.ids import command_id_for
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.sessions import trading_day_start_ms

NY = ZoneInfo("America/New_York")


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=NY).timestamp()) * 1000 + ms


def limits(**overrides: Any) -> RiskLimits:
    return RiskLimits(**{**dict(trading_symbols={"EURUSD", "GBPUSD"}, max_daily_loss=500.0, max_drawdown=0.2),
                         **overrides})


# ------------------------------------------------------------------------ stop-out


TUESDAY_11 = ny(2024, 1, 9, 11)


def test_no_breach_no_stop_out():
    state, close_all = evaluate_stop_out(StopOutState(), limits(), 9_800.0, 10_000.0, 10_000.0, TUESDAY_11)
    assert (state, close_all) == (StopOutState(), False)


def test_daily_loss_breach_closes_everything_once_and_blocks_until_17_00_new_york():
    state, close_all = evaluate_stop_out(StopOutState(), limits(), 9_500.0, 10_000.0, 10_000.0, TUESDAY_11)
    assert close_all
    assert state.code is RejectCode.DAILY_LOSS and "daily loss 500.00" in state.reason
    assert state.blocked_until_ms == ny(2024, 1, 9, 17)
    assert state.is_active(ny(2024, 1, 9, 16, 59, 59, 999)) and not state.is_active(ny(2024, 1, 9, 17))
    again, close_again = evaluate_stop_out(state, limits(), 9_400.0, 10_000.0, 10_000.0, TUESDAY_11 + 60_000)
    assert (again, close_again) == (state, False)


def test_drawdown_breach_stops_out_with_its_own_code():
    state, close_all = evaluate_stop_out(StopOutState(), limits(max_daily_loss=0), 7_900.0, 8_000.0,
                                         10_000.0, TUESDAY_11)
    assert close_all and state.code is RejectCode.DRAWDOWN


def test_a_friday_stop_out_lasts_until_sunday_17_00():
    friday = ny(2024, 1, 12, 11)
    state, _ = evaluate_stop_out(StopOutState(), limits(), 9_000.0, 10_000.0, 10_000.0, friday)
    assert state.blocked_until_ms == ny(2024, 1, 14, 17)


def test_the_next_trading_day_starts_clean():
    state, _ = evaluate_stop_out(StopOutState(), limits(), 9_500.0, 10_000.0, 10_000.0, TUESDAY_11)
    wednesday = ny(2024, 1, 10, 9)
    after, close_all = evaluate_stop_out(state, limits(), 9_450.0, 9_500.0, 10_000.0, wednesday)
    assert not close_all and not after.is_active(wednesday)


def test_a_new_breach_on_the_next_day_stops_out_again():
    state, _ = evaluate_stop_out(StopOutState(), limits(), 9_500.0, 10_000.0, 10_000.0, TUESDAY_11)
    wednesday = ny(2024, 1, 10, 9)
    after, close_all = evaluate_stop_out(state, limits(), 8_900.0, 9_500.0, 10_000.0, wednesday)
    assert close_all and after.blocked_until_ms == ny(2024, 1, 10, 17)


def test_limits_off_never_stop_out():
    off = limits(max_daily_loss=0, max_drawdown=0)
    assert evaluate_stop_out(StopOutState(), off, 1.0, 10_000.0, 10_000.0, TUESDAY_11) == (StopOutState(), False)


# ------------------------------------------------------------------------ weekend


@pytest.mark.parametrize(("now", "expected"), [
    (ny(2024, 1, 12, 16, 44, 59, 999), False),
    (ny(2024, 1, 12, 16, 45), True),
    (ny(2024, 1, 12, 16, 59, 59, 999), True),
    (ny(2024, 1, 12, 17), False),          # closed: nothing can be closed any more
    (ny(2024, 1, 11, 16, 50), False),      # Thursday's rollover is not the weekend
    (ny(2024, 6, 14, 16, 50), True),       # summer time: 20:50 UTC
])
def test_auto_close_fires_in_the_last_15_minutes_before_the_weekly_close(now, expected):
    assert should_auto_close_for_weekend(now, auto_close_friday=True, already_done_for_week=False) is expected


def test_auto_close_only_for_users_who_asked_and_only_once():
    now = ny(2024, 1, 12, 16, 50)
    assert not should_auto_close_for_weekend(now, auto_close_friday=False, already_done_for_week=False)
    assert not should_auto_close_for_weekend(now, auto_close_friday=True, already_done_for_week=True)


def test_auto_close_lead_time_is_configurable():
    now = ny(2024, 1, 12, 16, 30)
    assert should_auto_close_for_weekend(now, auto_close_friday=True, lead_minutes=30, already_done_for_week=False)
    assert not should_auto_close_for_weekend(now, auto_close_friday=True, already_done_for_week=False)


# --------------------------------------------------------------- one guard step per reading

FRIDAY_16_50 = ny(2024, 1, 12, 16, 50)


def _step(marks: Watermarks, equity: float, now: int, *, auto_close_friday: bool = False, **limit: Any) -> Any:
    return guard_account(marks, limits(**limit), auto_close_friday=auto_close_friday, equity=equity, now_ms=now)


def test_a_reading_without_breach_only_moves_the_watermarks():
    step = _step(Watermarks(), 10_000.0, TUESDAY_11)
    assert step.closes == ()
    assert (step.marks.day_start_equity, step.marks.peak_equity) == (10_000.0, 10_000.0)
    assert step.marks.day_start_ms == trading_day_start_ms(TUESDAY_11)
    higher = _step(step.marks, 10_400.0, TUESDAY_11 + 60_000)
    assert (higher.marks.day_start_equity, higher.marks.peak_equity, higher.closes) == (10_000.0, 10_400.0, ())


def test_a_breach_closes_everything_once_per_trading_day():
    start = _step(Watermarks(), 10_000.0, TUESDAY_11).marks
    breached = _step(start, 9_500.0, TUESDAY_11 + 60_000)
    day = trading_day_start_ms(TUESDAY_11)
    assert breached.closes == (CloseAll(f"stop-out:{day}", breached.closes[0].reason),)
    assert breached.closes[0].reason.startswith("stop-out: daily loss 500.00")
    assert breached.marks.stop_out.code is RejectCode.DAILY_LOSS
    assert breached.marks.stop_out.is_active(TUESDAY_11 + 60_000)
    assert _step(breached.marks, 9_400.0, TUESDAY_11 + 120_000).closes == ()


def test_a_close_all_has_one_command_id_per_occasion_and_user():
    close = CloseAll("stop-out:1", "stop-out: test")
    assert close.command_id("alice") == command_id_for("stop-out:1", "alice", "close-all")
    assert close.command_id("alice") != close.command_id("bob")
    assert close.command_id("alice") != CloseAll("stop-out:2", "stop-out: test").command_id("alice")


def test_the_weekend_close_comes_once_and_only_for_users_who_asked():
    marks = _step(Watermarks(), 10_000.0, FRIDAY_16_50 - 60_000).marks
    assert _step(marks, 10_000.0, FRIDAY_16_50).closes == ()
    step = _step(marks, 10_000.0, FRIDAY_16_50, auto_close_friday=True)
    assert step.closes == (CloseAll(f"weekend:{FRIDAY_16_50 // 86_400_000}", "auto-close before the weekend"),)
    assert step.marks.weekend_closed_at_ms == FRIDAY_16_50
    assert _step(step.marks, 10_000.0, FRIDAY_16_50 + 60_000, auto_close_friday=True).closes == ()


def test_a_stop_out_and_the_weekend_close_may_come_together():
    marks = _step(Watermarks(), 10_000.0, FRIDAY_16_50 - 60_000).marks
    step = _step(marks, 9_000.0, FRIDAY_16_50, auto_close_friday=True)
    assert [c.key.split(":")[0] for c in step.closes] == ["stop-out", "weekend"]


# ------------------------------------------------------------------- the rules' context

EURUSD = SymbolSpecInfo(symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=0.00001,
                        contract_size=100_000, tick_size=0.00001, tick_value=1.0,
                        volume_min=0.01, volume_max=100.0, volume_step=0.01, filling_modes=1)


def test_the_context_counts_positions_and_the_spread_of_the_commands_symbol():
    marks = Watermarks(day_start_equity=10_000.0, peak_equity=11_000.0)
    ctx = risk_context(marks, at_ms=TUESDAY_11, equity=9_900.0, balance=10_000.0,
                       position_symbols=["EURUSD.m", "GBPUSD.m", "EURUSD.m"], spec=EURUSD, bid=1.08500,
                       ask=1.08512, netting=True)
    assert (ctx.open_positions, ctx.symbol_positions, ctx.spread_points) == (3, 2, 12)
    assert (ctx.day_start_equity, ctx.peak_equity, ctx.netting) == (10_000.0, 11_000.0, True)
    assert ctx.market.is_open and ctx.stop_out == marks.stop_out


def test_before_the_first_reading_todays_equity_is_the_start_and_the_peak():
    ctx = risk_context(Watermarks(), at_ms=TUESDAY_11, equity=9_900.0, balance=10_000.0,
                       position_symbols=["EURUSD.m"], spec=None, netting=False)
    assert (ctx.day_start_equity, ctx.peak_equity) == (9_900.0, 9_900.0)
    assert (ctx.symbol_positions, ctx.bid, ctx.ask, ctx.spread_points, ctx.spec) == (0, 0.0, 0.0, 0.0, None)
