"""The agent's own risk checks: every rule and its boundary (the stop-out: test_guard.py).

The scene: a USD account with 10,000 equity trades EURUSD (5 digits, one point = 0.00001,
worth 1.00 USD per lot) on Tuesday 9 January 2024 at 10:00 New York, quote 1.08500/1.08512.
The default command buys 0.10 lots at market with a stop loss 500 points below the ask:
a 50.00 USD risk.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mt5fleet.client.core.guard import evaluate_stop_out, reset_stop_out
from mt5fleet.client.core.risk import (
    Decision,
    RejectCode,
    RiskContext,
    RiskLimits,
    StopOutState,
    check,
    trade_risk,
)
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.sessions import market_state
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType

NY = ZoneInfo("America/New_York")


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=NY).timestamp()) * 1000 + ms


NOW = ny(2024, 1, 9, 10)                  # Tuesday, market open, far from the rollover
BID, ASK = 1.08500, 1.08512
EURUSD = SymbolSpecInfo(symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=0.00001,
                        contract_size=100_000, tick_size=0.00001, tick_value=1.0,
                        volume_min=0.01, volume_max=100.0, volume_step=0.01, filling_modes=1)


def command(**overrides: Any) -> Command:
    fields: dict[str, Any] = dict(
        command_id="mf1000000000000000000000001", user_id="alice", type=CommandType.OPEN_POSITION,
        symbol="EURUSD", order_type=OrderType.BUY, lot_size=0.10, entry_price=ASK,
        stop_loss=1.08012, take_profit=1.09512, created_at_ms=NOW - 1_000, expires_at_ms=NOW + 60_000)
    return Command(**{**fields, **overrides})


def close_command(**overrides: Any) -> Command:
    return command(**{**dict(type=CommandType.CLOSE_POSITION, lot_size=0.0, entry_price=None, stop_loss=None,
                             take_profit=None, position_ticket=5001), **overrides})


def limits(**overrides: Any) -> RiskLimits:
    return RiskLimits(**{**dict(trading_symbols={"EURUSD", "GBPUSD"}, max_risk_per_trade_pct=1.0,
                                max_daily_loss=500.0, max_drawdown=0.2, max_open_positions=5,
                                max_spread_points=20), **overrides})


def ctx(**overrides: Any) -> RiskContext:
    now = overrides.pop("now_ms", NOW)
    fields: dict[str, Any] = dict(
        now_ms=now, equity=10_000.0, balance=10_000.0, day_start_equity=10_000.0, peak_equity=10_000.0,
        open_positions=1, symbol_positions=0, bid=BID, ask=ASK, spread_points=12.0, spec=EURUSD,
        market=market_state(now))
    return RiskContext(**{**fields, **overrides})


def refused(decision: Decision, code: RejectCode) -> bool:
    return not decision.allowed and decision.code is code


# ------------------------------------------------------------------------------ basics


def test_a_sound_market_buy_is_allowed():
    decision = check(command(), limits(), ctx())
    assert decision.allowed and decision.code is None
    assert "passed" in decision.reason


def test_reject_codes_are_a_stable_contract():
    assert {c.value for c in RejectCode} == {
        "expired", "paused", "close_only", "stopped_out", "symbol_not_allowed", "max_open_positions",
        "max_risk_per_trade", "daily_loss", "drawdown", "market_closed", "rollover", "max_spread", "invalid",
        "news_window", "broker_mismatch"}
    assert f"{RejectCode.MAX_SPREAD}" == "max_spread"


def test_decision_and_limits_are_frozen():
    with pytest.raises(FrozenInstanceError):
        check(command(), limits(), ctx()).allowed = False  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        limits().paused = True  # type: ignore[misc]


def test_limits_take_symbol_lists_and_keep_them_frozen():
    assert limits(trading_symbols=["EURUSD"], allowed_symbols=["EURUSD"]).allowed_symbols == frozenset({"EURUSD"})


@pytest.mark.parametrize("bad", [dict(max_risk_per_trade_pct=-1), dict(max_risk_per_trade_pct=101),
                                 dict(max_drawdown=1.5), dict(max_daily_loss=-10), dict(max_open_positions=-1),
                                 dict(max_spread_points=float("nan"))])
def test_nonsense_limits_are_refused_when_loaded(bad):
    with pytest.raises(ValueError):
        limits(**bad)


# ------------------------------------------------------------------------------ expiry


def test_one_ms_before_expiry_the_command_runs():
    assert check(command(), limits(), ctx(now_ms=command().expires_at_ms - 1)).allowed


def test_at_its_expiry_instant_the_command_is_expired():
    decision = check(command(), limits(), ctx(now_ms=command().expires_at_ms))
    assert refused(decision, RejectCode.EXPIRED)


def test_expired_by_one_ms_is_refused_with_how_late():
    decision = check(command(), limits(), ctx(now_ms=command().expires_at_ms + 1))
    assert refused(decision, RejectCode.EXPIRED)
    assert "1 ms late" in decision.reason


@pytest.mark.parametrize("kind", [CommandType.CLOSE_POSITION, CommandType.MODIFY_POSITION, CommandType.CLOSE_ALL])
def test_an_expired_close_or_modify_is_refused_too(kind):
    cmd = close_command(type=kind)
    assert refused(check(cmd, limits(), ctx(now_ms=cmd.expires_at_ms + 1)), RejectCode.EXPIRED)


def test_expiry_is_checked_before_anything_else():
    cmd = command(symbol="USDJPY")
    decision = check(cmd, limits(paused=True), ctx(now_ms=cmd.expires_at_ms + 5))
    assert decision.code is RejectCode.EXPIRED


# -------------------------------------------------------------- pause, close-only, stop-out


def test_paused_account_opens_nothing():
    assert refused(check(command(), limits(paused=True), ctx()), RejectCode.PAUSED)


def test_close_only_account_opens_nothing():
    decision = check(command(), limits(close_only=True), ctx())
    assert refused(decision, RejectCode.CLOSE_ONLY)
    assert "close-only" in decision.reason


def test_stopped_out_account_opens_nothing_until_the_block_ends():
    stop = StopOutState(blocked_until_ms=ny(2024, 1, 9, 17), reason="daily loss 600.00")
    assert refused(check(command(), limits(), ctx(stop_out=stop)), RejectCode.STOPPED_OUT)
    later = command(expires_at_ms=ny(2024, 1, 9, 18))
    assert check(later, limits(), ctx(stop_out=stop, now_ms=ny(2024, 1, 9, 17, 10))).allowed


@pytest.mark.parametrize("kind", [CommandType.CLOSE_POSITION, CommandType.MODIFY_POSITION, CommandType.CLOSE_ALL])
@pytest.mark.parametrize("restriction", [dict(paused=True), dict(close_only=True),
                                         dict(trading_symbols=set()), dict(allowed_symbols={"GBPUSD"})])
def test_reducing_risk_is_always_allowed_while_the_market_is_open(kind, restriction):
    stop = StopOutState(blocked_until_ms=NOW + 3_600_000)
    decision = check(close_command(type=kind), limits(**restriction), ctx(stop_out=stop, equity=1.0))
    assert decision.allowed, decision.reason


@pytest.mark.parametrize("kind", [CommandType.CLOSE_POSITION, CommandType.MODIFY_POSITION])
def test_closes_pass_the_rollover_window(kind):
    rollover = ny(2024, 1, 9, 16, 58)
    cmd = close_command(type=kind, expires_at_ms=rollover + 60_000)
    assert check(cmd, limits(), ctx(now_ms=rollover)).allowed


# ---------------------------------------------------------------------------- symbols


def test_symbol_outside_the_effective_trading_set_is_refused():
    decision = check(command(symbol="USDJPY"), limits(), ctx())
    assert refused(decision, RejectCode.SYMBOL_NOT_ALLOWED)
    assert "USDJPY" in decision.reason and "EURUSD, GBPUSD" in decision.reason


def test_allowed_symbols_narrow_the_trading_set():
    decision = check(command(), limits(allowed_symbols={"GBPUSD"}), ctx())
    assert refused(decision, RejectCode.SYMBOL_NOT_ALLOWED)
    assert "allowed symbols (GBPUSD)" in decision.reason


def test_allowed_symbols_never_widen_the_trading_set():
    decision = check(command(symbol="USDJPY"), limits(allowed_symbols={"USDJPY"}), ctx())
    assert refused(decision, RejectCode.SYMBOL_NOT_ALLOWED)


def test_empty_allowed_symbols_means_the_whole_trading_set():
    assert check(command(), limits(allowed_symbols=set()), ctx()).allowed


def test_without_a_trading_set_nothing_is_opened():
    assert refused(check(command(), limits(trading_symbols=set()), ctx()), RejectCode.SYMBOL_NOT_ALLOWED)


# ------------------------------------------------------------------- market hours


def test_no_new_position_while_the_market_is_closed():
    saturday = ny(2024, 1, 13, 10)
    decision = check(command(expires_at_ms=saturday + 1), limits(), ctx(now_ms=saturday))
    assert refused(decision, RejectCode.MARKET_CLOSED)
    assert str(ny(2024, 1, 14, 17)) in decision.reason


@pytest.mark.parametrize("kind", [CommandType.CLOSE_POSITION, CommandType.MODIFY_POSITION, CommandType.CLOSE_ALL])
def test_closes_and_modifies_are_refused_while_closed_as_the_broker_would(kind):
    saturday = ny(2024, 1, 13, 10)
    cmd = close_command(type=kind, expires_at_ms=saturday + 1)
    assert refused(check(cmd, limits(), ctx(now_ms=saturday)), RejectCode.MARKET_CLOSED)


def test_friday_16_59_still_opens_and_17_00_does_not():
    # With the rollover window off, only the weekly close decides.
    before, at = ny(2024, 1, 12, 16, 59), ny(2024, 1, 12, 17)
    cmd = command(expires_at_ms=at + 60_000)
    no_rollover = dict(market=market_state(before, rollover_before_min=0))
    assert check(cmd, limits(), ctx(now_ms=before, **no_rollover)).allowed
    assert refused(check(cmd, limits(), ctx(now_ms=at)), RejectCode.MARKET_CLOSED)


def test_no_new_position_in_the_rollover_window():
    now = ny(2024, 1, 9, 16, 57)
    decision = check(command(expires_at_ms=now + 1), limits(), ctx(now_ms=now))
    assert refused(decision, RejectCode.ROLLOVER)


# ----------------------------------------------------------------- positions, spread


def test_one_below_max_open_positions_may_open():
    assert check(command(), limits(max_open_positions=5), ctx(open_positions=4)).allowed


def test_exactly_at_max_open_positions_is_refused():
    decision = check(command(), limits(max_open_positions=5), ctx(open_positions=5, symbol_positions=2))
    assert refused(decision, RejectCode.MAX_OPEN_POSITIONS)
    assert "5 positions open (2 on EURUSD), the limit is 5" in decision.reason


def test_on_a_netting_account_an_order_on_a_held_symbol_opens_no_new_position():
    at_cap = limits(max_open_positions=5)
    assert check(command(), at_cap, ctx(open_positions=5, symbol_positions=1, netting=True)).allowed
    assert refused(check(command(), at_cap, ctx(open_positions=5, symbol_positions=0, netting=True)),
                   RejectCode.MAX_OPEN_POSITIONS)  # a new symbol is a new position
    assert refused(check(command(), at_cap, ctx(open_positions=5, symbol_positions=1)),
                   RejectCode.MAX_OPEN_POSITIONS)  # hedging: every order is a position


def test_zero_max_open_positions_is_no_limit():
    assert check(command(), limits(max_open_positions=0), ctx(open_positions=400)).allowed


def test_spread_exactly_at_the_max_is_accepted():
    assert check(command(), limits(max_spread_points=12), ctx(spread_points=12.0)).allowed


def test_spread_above_the_max_is_refused_with_both_figures():
    decision = check(command(), limits(max_spread_points=12), ctx(spread_points=12.5))
    assert refused(decision, RejectCode.MAX_SPREAD)
    assert "12.5 points" in decision.reason and "maximum 12" in decision.reason


def test_zero_max_spread_is_no_cap():
    assert check(command(), limits(max_spread_points=0), ctx(spread_points=900)).allowed


# --------------------------------------------------------------- daily loss, drawdown


def test_daily_loss_just_under_the_limit_still_opens():
    assert check(command(), limits(max_daily_loss=500), ctx(equity=9_500.01)).allowed


def test_daily_loss_at_the_limit_is_refused():
    decision = check(command(), limits(max_daily_loss=500), ctx(equity=9_500.0))
    assert refused(decision, RejectCode.DAILY_LOSS)
    assert "daily loss 500.00" in decision.reason and "10000.00" in decision.reason


def test_a_winning_day_never_counts_as_loss():
    assert check(command(), limits(max_daily_loss=1), ctx(equity=12_000.0, peak_equity=12_000.0)).allowed


def test_zero_daily_loss_limit_is_off():
    assert check(command(), limits(max_daily_loss=0, max_drawdown=0), ctx(equity=5_000.0)).allowed


def test_drawdown_just_under_the_limit_still_opens():
    assert check(command(), limits(max_drawdown=0.1, max_daily_loss=0), ctx(equity=9_000.01)).allowed


def test_drawdown_at_the_limit_is_refused():
    decision = check(command(), limits(max_drawdown=0.1, max_daily_loss=0), ctx(equity=9_000.0))
    assert refused(decision, RejectCode.DRAWDOWN)
    assert "drawdown 10.00%" in decision.reason


def test_context_shows_the_days_loss_and_the_drawdown_from_peak():
    seen = ctx(equity=9_000.0, day_start_equity=9_400.0)
    assert (seen.daily_loss, seen.drawdown) == (400.0, 0.1)


def test_drawdown_without_a_known_peak_is_zero():
    assert check(command(), limits(max_drawdown=0.01, max_daily_loss=0), ctx(peak_equity=0.0)).allowed


# -------------------------------------------------------------------- risk per trade


def test_risk_is_lots_times_ticks_to_the_stop_times_tick_value():
    assert trade_risk(command(), ctx()) == pytest.approx(50.0)


def test_risk_exactly_at_the_limit_is_allowed_despite_float_noise():
    # 0.5% of 10,000 = 50.00, exactly the risk of the default command.
    assert check(command(), limits(max_risk_per_trade_pct=0.5), ctx()).allowed


def test_risk_one_point_over_the_limit_is_refused_with_the_money():
    decision = check(command(stop_loss=1.08011), limits(max_risk_per_trade_pct=0.5), ctx())
    assert refused(decision, RejectCode.MAX_RISK_PER_TRADE)
    assert "risk 50.10" in decision.reason and "above 50.00" in decision.reason


def test_risk_one_point_under_the_limit_is_allowed():
    assert check(command(stop_loss=1.08013), limits(max_risk_per_trade_pct=0.5), ctx()).allowed


def test_risk_over_the_limit_by_at_most_a_tenth_of_a_percent_of_it_is_rounding_not_refused():
    # 1% of 10,000 = 100.00. 0.05 lots x 2,001 points = 100.05: within 0.1% of the limit (100.10), allowed;
    # 0.05 lots x 2,003 points = 100.15: above it, refused.
    assert check(command(lot_size=0.05, stop_loss=round(ASK - 0.02001, 5)), limits(), ctx()).allowed
    decision = check(command(lot_size=0.05, stop_loss=round(ASK - 0.02003, 5)), limits(), ctx())
    assert refused(decision, RejectCode.MAX_RISK_PER_TRADE) and "risk 100.15" in decision.reason


def test_market_order_risk_is_measured_from_the_current_ask():
    # The ask rose 10 points since the worker sized the trade: 51.00 at risk, not 50.00.
    moved = ctx(bid=BID + 0.0001, ask=ASK + 0.0001)
    assert refused(check(command(), limits(max_risk_per_trade_pct=0.5), moved), RejectCode.MAX_RISK_PER_TRADE)


def test_sell_risk_counts_the_stop_above_the_bid():
    sell = command(order_type=OrderType.SELL, entry_price=BID, stop_loss=BID + 0.005, take_profit=BID - 0.01)
    assert trade_risk(sell, ctx()) == pytest.approx(50.0)
    assert check(sell, limits(max_risk_per_trade_pct=0.5), ctx()).allowed


def test_pending_order_risk_is_measured_from_its_entry():
    limit_buy = command(order_type=OrderType.BUY_LIMIT, entry_price=1.08000, stop_loss=1.07500)
    assert trade_risk(limit_buy, ctx()) == pytest.approx(50.0)


def test_a_command_without_stop_loss_is_refused_when_risk_is_capped():
    decision = check(command(stop_loss=None), limits(), ctx())
    assert refused(decision, RejectCode.MAX_RISK_PER_TRADE)
    assert "unbounded" in decision.reason


def test_a_command_without_stop_loss_passes_when_risk_is_not_capped():
    assert check(command(stop_loss=None), limits(max_risk_per_trade_pct=0), ctx()).allowed


def test_risk_uses_the_tick_value_in_account_currency():
    # USDJPY-like: tick 0.001 worth 0.67 USD per lot; 0.10 lots, 500 ticks: 33.50.
    jpy = replace(EURUSD, symbol="USDJPY", digits=3, point=0.001, tick_size=0.001, tick_value=0.67)
    cmd = command(symbol="USDJPY", entry_price=150.012, stop_loss=149.512)
    assert trade_risk(cmd, ctx(spec=jpy, bid=150.000, ask=150.012)) == pytest.approx(33.5)


@settings(max_examples=150, deadline=None)
@given(lot=st.integers(1, 500).map(lambda n: n / 100), distance=st.integers(1, 3_000))
def test_an_allowed_trade_never_risks_more_than_the_limit(lot, distance):
    cmd = command(lot_size=lot, stop_loss=round(ASK - distance * 0.00001, 5))
    decision = check(cmd, limits(max_risk_per_trade_pct=1.0), ctx())
    assert decision.allowed == (trade_risk(cmd, ctx()) <= 100.0 * 1.001)   # the limit and 0.1 % of it
    smaller = check(replace(cmd, lot_size=0.01), limits(max_risk_per_trade_pct=1.0), ctx())
    assert smaller.allowed or not decision.allowed  # shrinking a trade never turns it away


# -------------------------------------------------------------------------- invalid


@pytest.mark.parametrize(("overrides", "context", "words"), [
    (dict(lot_size=0.0), {}, "lot size 0.0 is not positive"),
    (dict(order_type=OrderType.BUY_LIMIT, entry_price=None), {}, "needs an entry price"),
    ({}, dict(spec=None), "no usable symbol specification"),
    ({}, dict(bid=0.0, ask=0.0), "no valid quote"),
    (dict(stop_loss=1.08600), {}, "must be below the entry 1.08512 of a BUY"),
    (dict(order_type=OrderType.SELL, stop_loss=1.08400, take_profit=None), {}, "must be above the entry 1.085"),
])
def test_malformed_opens_are_refused_as_invalid(overrides, context, words):
    decision = check(command(**overrides), limits(), ctx(**context))
    assert refused(decision, RejectCode.INVALID)
    assert words in decision.reason


# ------------------------------------------------------------------------ stop-out
# The stop-out itself is tested in test_guard.py; here, how it meets the rules.


TUESDAY_11 = ny(2024, 1, 9, 11)


def test_explicit_reset_lifts_the_block_without_closing_again_today():
    state, _ = evaluate_stop_out(StopOutState(), limits(), 9_500.0, 10_000.0, 10_000.0, TUESDAY_11)
    cleared = reset_stop_out(state)
    assert not cleared.is_active(TUESDAY_11 + 1)
    after, close_all = evaluate_stop_out(cleared, limits(), 9_500.0, 10_000.0, 10_000.0, TUESDAY_11 + 2)
    assert not close_all and not after.is_active(TUESDAY_11 + 2)
    # The daily loss rule itself still refuses new positions while the loss stands.
    assert refused(check(command(), limits(), ctx(equity=9_500.0, stop_out=after)), RejectCode.DAILY_LOSS)


# ------------------------------------------------------------------------------ broker mismatch (issue 17)


def test_an_open_on_another_brokers_account_is_refused_naming_both_brokers_closes_pass():
    declared = limits(broker_name="IC Markets", broker_server="ICMarketsSC-Demo")
    wrong = ctx(account_company="Other Broker Ltd", account_server="OtherBroker-Live")
    decision = check(command(), declared, wrong)
    assert refused(decision, RejectCode.BROKER_MISMATCH)
    assert "'Other Broker Ltd' on server 'OtherBroker-Live'" in decision.reason
    assert "declares 'IC Markets' on server 'ICMarketsSC-Demo'" in decision.reason
    assert check(close_command(), declared, wrong).allowed               # closing stays possible
    # The server decides (the company is the legal entity, rarely the brand), without case.
    assert check(command(), declared, ctx(account_company="Raw Trading Ltd", account_server="icmarketssc-demo")).allowed
    assert check(command(), declared, ctx()).allowed                     # the terminal said nothing yet
    assert check(command(), limits(), wrong).allowed                     # no server config: nothing declared
