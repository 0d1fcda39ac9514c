"""The adjustment core (workers/adjust.py, workers/policy.py) against prices worked out
by hand: the user's ask/bid, the reference differential, distances kept, the point grid.

Expected levels are literals or plain arithmetic in the test, never the module's helpers.
Every command produced must also pass the wire validation the agent applies. Lots: the
worker spends 99 % of the user's risk limit and sizes a market order as if its price moved
the user's max deviation (20 points by default) away from the stop (proto/domain/risk.py).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from factories import NOW_MS
from factories import domain_signal as signal  # the domain Signal, not the protobuf one
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mt5fleet.proto.domain import ids
from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.sessions import market_state
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType, Signal, SubscriptionTier
from mt5fleet.proto.v1 import account_pb2, common_pb2, config_pb2
from mt5fleet.proto.validation import ValidationError, check_client_config, check_command
from mt5fleet.workers.adapters.wire import command_message
from mt5fleet.workers.core.adjust import Adjusted, Grid, Skip, SkipReason, adjust
from mt5fleet.workers.core.policy import (
    DEFAULT_MAX_DEVIATION_POINTS,
    DEFAULT_MAX_QUOTE_AGE_MS,
    UserPolicy,
    UserState,
    policy_from_config,
)

NOW = NOW_MS                            # Tuesday 17:13:20 New York: open, past the rollover
ROLLOVER_NOW = NOW - 680_000            # Tuesday 17:02:00 New York
SATURDAY = NOW + 4 * 86_400_000         # market closed
BUY, SELL = OrderType.BUY, OrderType.SELL
OPEN, CLOSE, MODIFY, CLOSE_ALL = (CommandType.OPEN_POSITION, CommandType.CLOSE_POSITION,
                                  CommandType.MODIFY_POSITION, CommandType.CLOSE_ALL)


# ----------------------------------------------------------------------------- builders


def quote(symbol: str = "EURUSD", bid: float = 1.08500, ask: float = 1.08512, *, age_ms: int = 200,
          digits: int = 5) -> Quote:
    return Quote(symbol=symbol, bid=bid, ask=ask, time_ms=NOW - age_ms, spread_points=0.0, digits=digits)


def spec(symbol: str = "EURUSD", **overrides: object) -> SymbolSpecInfo:
    base: dict[str, object] = dict(
        symbol=symbol, broker_symbol=symbol + ".m", digits=5, point=0.00001, contract_size=100_000.0,
        tick_size=0.00001, tick_value=1.0, volume_min=0.01, volume_max=100.0, volume_step=0.01,
        stops_level=10, currency_base=symbol[:3], currency_profit=symbol[3:])
    if symbol.endswith("JPY"):
        base.update(digits=3, point=0.001, tick_size=0.001, tick_value=0.67)
    if symbol == "XAUUSD":
        base.update(digits=2, point=0.01, tick_size=0.01, contract_size=100.0)
    base.update(overrides)
    return SymbolSpecInfo(**base)  # type: ignore[arg-type]


def account(currency: str = "USD", equity: float = 10_000.0) -> AccountSnapshot:
    return AccountSnapshot(user_id="alice", account_number="1", currency=currency, balance=equity, equity=equity,
                           margin_used=0.0, margin_free=equity, time_ms=NOW)


QUOTES = {"EURUSD": quote(), "USDJPY": quote("USDJPY", 149.500, 149.512, digits=3),
          "XAUUSD": quote("XAUUSD", 1951.20, 1951.37, digits=2)}
SPECS = {symbol: spec(symbol) for symbol in QUOTES}


def user(user_id: str = "alice", *, quotes: dict[str, Quote] | None = None,
         specs: dict[str, SymbolSpecInfo] | None = None, acc: AccountSnapshot | None = None,
         no_account: bool = False, stopped_out: bool = False,
         positions: dict[str, tuple[tuple[str, int], ...]] | None = None,
         volumes: dict[int, float] | None = None, **policy: object) -> UserState:
    policy.setdefault("trading_symbols", frozenset(QUOTES))
    return UserState(
        policy=UserPolicy(user_id=user_id, **policy),  # type: ignore[arg-type]
        quotes=QUOTES if quotes is None else quotes, specs=SPECS if specs is None else specs,
        account=None if no_account else (acc or account()), stopped_out=stopped_out,
        positions_by_signal=positions or {}, position_volumes=volumes or {})


def commands(result: Adjusted | Skip, now: int = NOW) -> list[Command]:
    """The commands of a result, each sent over the wire and checked exactly as the agent
    checks it: what the agent reads back is what the core built."""
    assert isinstance(result, Adjusted), result
    received = [check_command(command_message(command), now) for command in result.commands]
    assert received == list(result.commands)
    return received


def one(result: Adjusted | Skip) -> Command:
    (command,) = commands(result)
    return command


def skipped(result: Adjusted | Skip) -> SkipReason:
    assert isinstance(result, Skip), result
    assert result.detail
    return result.reason


def half_up(value: Decimal, digits: int) -> Decimal:
    """Round half away from zero to ``digits`` decimals, the way one would by hand."""
    return value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def test_fixed_instants() -> None:
    assert market_state(NOW).accepts_new_positions
    assert market_state(ROLLOVER_NOW).in_rollover
    assert not market_state(SATURDAY).is_open


# ------------------------------------------------------------------------ market orders


def test_market_buy_enters_at_the_user_ask_and_keeps_distances() -> None:
    cmd = one(adjust(signal(), user(), NOW))
    # Reference ask 1.08500 -> SL 50 pips below, TP 100 pips above; user ask 1.08512.
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (1.08512, 1.08012, 1.09512)
    assert cmd.original_entry == 1.08500
    assert cmd.price_adjustment == pytest.approx(0.00012, abs=1e-12)
    assert cmd.adjustment_reason == ("market BUY at broker ask 1.08512 vs reference ask 1.08500 (+12.0 points); "
                                     "SL/TP distances kept (500.0/1000.0 points)")
    assert cmd.lot_size == 0.19                 # 99 of the 100 USD limit over 500 + 20 ticks x 1 USD
    assert cmd.type is OPEN and cmd.order_type is BUY and cmd.symbol == "EURUSD"


def test_market_sell_enters_at_the_user_bid() -> None:
    sig = signal(order_type=SELL, stop_loss=1.08990, take_profit=1.07990)    # from reference bid 1.08490
    cmd = one(adjust(sig, user(), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (1.08500, 1.09000, 1.08000)
    assert cmd.original_entry == 1.08490 and cmd.reference_price == 1.08490
    assert cmd.price_adjustment == pytest.approx(0.00010, abs=1e-12)
    assert cmd.adjustment_reason.startswith("market SELL at broker bid 1.08500 vs reference bid 1.08490 (+10.0")


def test_market_order_with_an_explicit_reference_entry_keeps_distances_from_it() -> None:
    sig = signal(entry=1.08505, stop_loss=1.08005, take_profit=1.09005)
    cmd = one(adjust(sig, user(), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (1.08512, 1.08012, 1.09012)
    assert cmd.original_entry == 1.08505 and cmd.reference_price == 1.08500
    assert "vs reference entry 1.08505 (+7.0 points)" in cmd.adjustment_reason


def test_market_order_broker_below_the_reference() -> None:
    users_quotes = {**QUOTES, "EURUSD": quote(bid=1.08470, ask=1.08481)}
    cmd = one(adjust(signal(), user(quotes=users_quotes), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (1.08481, 1.07981, 1.09481)
    assert cmd.price_adjustment == pytest.approx(-0.00019, abs=1e-12)
    assert "(-19.0 points)" in cmd.adjustment_reason


def test_jpy_pair_three_digits() -> None:
    sig = signal(symbol="USDJPY", reference_bid=149.490, reference_ask=149.500, stop_loss=149.000,
                 take_profit=150.500)
    cmd = one(adjust(sig, user(), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (149.512, 149.012, 150.512)
    # Profit in JPY, USD account: one tick of a lot = 100 JPY = 100 / 149.500 USD.
    assert cmd.lot_size == 0.28                 # 99 / ((500 + 20) x 0.6689) = 0.2846


def test_gold_two_digits_rounds_a_reference_with_more_digits_half_away_from_zero() -> None:
    # The reference quotes gold to 3 decimals: SL 5.005 below, TP 10.015 above the ask.
    sig = signal(symbol="XAUUSD", reference_bid=1950.300, reference_ask=1950.500, stop_loss=1945.495,
                 take_profit=1960.515)
    cmd = one(adjust(sig, user(), NOW))
    # 1951.37 - 5.005 = 1946.365 -> 1946.37 (half up; float round() gives 1946.36 here).
    assert round(1951.37 - 5.005, 2) == 1946.36
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (1951.37, 1946.37, 1961.39)
    # 100 oz x 0.01 = 1 USD per tick; 5.00 to the SL = 500 ticks, + 20 allowed: 99 USD / 520 = 0.19 lots.
    assert cmd.lot_size == 0.19


@pytest.mark.parametrize(("order_type", "ref_sl", "expected_sl"), [
    (BUY, 1.080005, 1.08013),     # 1.08512 - 0.004995 = 1.080125: half a point, up
    (BUY, 1.0800049, 1.08012),    # 1.0801249: just under half, down
    (BUY, 1.079995, 1.08012),     # 1.080115: half, up
    (BUY, 1.080015, 1.08014),     # 1.080135: half, up
    (SELL, 1.089905, 1.09001),    # 1.08500 + 0.005005 = 1.090005: half, up
    (SELL, 1.0899049, 1.09000),   # 1.0900049: down
])
def test_rounding_boundaries_on_the_point_grid(order_type: OrderType, ref_sl: float, expected_sl: float) -> None:
    sig = signal(order_type=order_type, stop_loss=ref_sl, take_profit=None)
    cmd = one(adjust(sig, user(), NOW))
    side = Decimal("1.08512") if order_type is BUY else Decimal("1.08500")
    ref = Decimal("1.08500") if order_type is BUY else Decimal("1.08490")
    assert cmd.stop_loss == float(half_up(side + Decimal(repr(ref_sl)) - ref, 5)) == expected_sl
    assert cmd.take_profit is None
    assert "no TP" in cmd.adjustment_reason


# ------------------------------------------------------------------------- tick size
# A stock-index CFD quoted to 0.01 that trades in 0.25 ticks, 1 USD per index point per lot
# (a tick of a lot is 0.25 USD). Reference 4500.00/4500.50; this user's broker 4500.25/4500.75.
CFD = spec("US500", digits=2, point=0.01, tick_size=0.25, tick_value=0.25, contract_size=1.0, volume_min=0.1,
           volume_step=0.1, stops_level=30, currency_base="USD", currency_profit="USD")
CFD_QUOTE = quote("US500", 4500.25, 4500.75, digits=2)


def cfd_user(**policy: object) -> UserState:
    return user(quotes={**QUOTES, "US500": CFD_QUOTE}, specs={**SPECS, "US500": CFD},
                trading_symbols=frozenset({*QUOTES, "US500"}), **policy)


def cfd_signal(**overrides: object) -> Signal:
    base: dict[str, object] = dict(symbol="US500", reference_bid=4500.00, reference_ask=4500.50)
    return signal(**{**base, **overrides})


def test_cfd_levels_land_on_the_tick_grid() -> None:
    # Entry at the user's ask 4500.75; SL 10.40 below it = 4490.35 -> 4490.25 (the nearer tick);
    # TP 20.10 above = 4520.85 -> 4520.75. On the point grid alone they would be refused.
    cmd = one(adjust(cfd_signal(stop_loss=4490.10, take_profit=4520.60), cfd_user(), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (4500.75, 4490.25, 4520.75)
    # 10.50 to the SL + 0.20 allowed = 42.8 ticks x 0.25 USD = 10.70 USD a lot: 99 / 10.70 = 9.25 -> 9.2.
    assert cmd.lot_size == 9.2


def test_cfd_half_a_tick_rounds_away_from_zero_and_a_pending_entry_too() -> None:
    # SL 10.375 below the ask: 4490.375, exactly between 4490.25 and 4490.50 -> 4490.50.
    assert one(adjust(cfd_signal(stop_loss=4490.125, take_profit=None), cfd_user(), NOW)).stop_loss == 4490.50
    # A buy limit at 4480.10 shifted by the ask differential +0.25 = 4480.35 -> 4480.25; SL/TP keep their
    # distances from the reference entry and land on the grid too.
    limit = cfd_signal(order_type=OrderType.BUY_LIMIT, entry=4480.10, stop_loss=4470.10, take_profit=4500.10)
    cmd = one(adjust(limit, cfd_user(), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (4480.25, 4470.25, 4500.25)


def test_cfd_level_pushed_out_of_the_stops_level_stays_outside_on_the_tick_grid() -> None:
    # SL 0.20 under the reference ask -> 4500.55, above the bid 4500.25. Pushed to 31 points under
    # the bid (stops level 30): 4499.94, rounded outwards to 4499.75, never back in to 4500.00.
    cmd = one(adjust(cfd_signal(stop_loss=4500.30, take_profit=None), cfd_user(), NOW))
    assert cmd.stop_loss == 4499.75
    assert "SL pushed out to 4499.75, 50 points from bid 4500.25" in cmd.adjustment_reason


def test_the_grid_of_normal_fx_is_the_point_and_of_a_cfd_its_tick() -> None:
    fx = Grid.of(spec())
    assert fx.tick is None and fx.round(Decimal("1.085125")) == Decimal("1.08513")
    assert fx.round_beyond(Decimal("1.085121"), -1) == Decimal("1.08512")
    cfd = Grid.of(CFD)
    assert cfd.tick == Decimal("0.25") and cfd.round(Decimal("4490.37")) == Decimal("4490.25")
    assert cfd.round(Decimal("4490.375")) == Decimal("4490.50") and cfd.round(Decimal("-1.125")) == Decimal("-1.25")
    assert cfd.round_beyond(Decimal("4499.94"), -1) == Decimal("4499.75")
    assert cfd.round_beyond(Decimal("4500.01"), 1) == Decimal("4500.25")
    assert Grid.of(spec("USDJPY")).tick is None and Grid.of(spec("XAUUSD")).tick is None


# ----------------------------------------------------------------------- pending orders
# Reference bid/ask 1.08490/1.08500; this user's broker 1.08505/1.08520: the ask is 20
# points above the reference ask (buy side), the bid 15 points above the reference bid.
PENDING_QUOTES = {**QUOTES, "EURUSD": quote(bid=1.08505, ask=1.08520)}


@pytest.mark.parametrize(("order_type", "ref", "expected", "shift_points"), [
    (OrderType.BUY_LIMIT, (1.08300, 1.08100, 1.08700), (1.08320, 1.08120, 1.08720), 20),
    (OrderType.BUY_STOP, (1.08700, 1.08500, 1.09100), (1.08720, 1.08520, 1.09120), 20),
    (OrderType.SELL_LIMIT, (1.08700, 1.08900, 1.08300), (1.08715, 1.08915, 1.08315), 15),
    (OrderType.SELL_STOP, (1.08300, 1.08500, 1.07900), (1.08315, 1.08515, 1.07915), 15),
])
def test_pending_entry_shifts_by_the_differential_of_its_side(
        order_type: OrderType, ref: tuple[float, float, float], expected: tuple[float, float, float],
        shift_points: int) -> None:
    entry, sl, tp = ref
    sig = signal(order_type=order_type, entry=entry, stop_loss=sl, take_profit=tp)
    cmd = one(adjust(sig, user(quotes=PENDING_QUOTES), NOW))
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == expected
    assert cmd.original_entry == entry
    assert cmd.price_adjustment == pytest.approx(shift_points * 0.00001, abs=1e-12)
    assert cmd.reference_price == (1.08500 if order_type.is_buy else 1.08490)
    side = "ask" if order_type.is_buy else "bid"
    assert f"{order_type.name} entry {expected[0]:.5f} = reference entry {entry:.5f} shifted by broker {side}" \
        in cmd.adjustment_reason
    assert f"(+{shift_points}.0 points)" in cmd.adjustment_reason
    # Risk sizing works from the pending entry, which does not move: 200 points -> 99 / 200 = 0.495.
    assert cmd.lot_size == 0.49


@pytest.mark.parametrize(("order_type", "entry", "outcome"), [
    # Stops level 10: a pending entry must be at least 10 points from the user's price.
    (OrderType.BUY_LIMIT, 1.08490, "ok"),        # 1.08510, 10 points under the ask 1.08520
    (OrderType.BUY_LIMIT, 1.08491, "invalid"),   # 9 points
    (OrderType.BUY_STOP, 1.08510, "ok"),         # 1.08530, 10 above the ask
    (OrderType.BUY_STOP, 1.08509, "invalid"),
    (OrderType.BUY_STOP, 1.08400, "invalid"),    # wrong side of the ask altogether
    (OrderType.SELL_LIMIT, 1.08500, "ok"),       # 1.08515, 10 above the bid 1.08505
    (OrderType.SELL_LIMIT, 1.08499, "invalid"),
    (OrderType.SELL_STOP, 1.08480, "ok"),        # 1.08495, 10 under the bid
    (OrderType.SELL_STOP, 1.08481, "invalid"),
])
def test_pending_entry_inside_the_stops_level_is_skipped(order_type: OrderType, entry: float, outcome: str) -> None:
    step = -0.005 if order_type.is_buy else 0.005
    sig = signal(order_type=order_type, entry=entry, stop_loss=entry + step, take_profit=entry - step)
    result = adjust(sig, user(quotes=PENDING_QUOTES), NOW)
    if outcome == "ok":
        one(result)
    else:
        assert skipped(result) is SkipReason.INVALID_LEVELS


# ------------------------------------------------------------------------ stops level


def test_market_buy_sl_inside_the_stops_level_is_pushed_out_from_the_bid() -> None:
    # 5-point SL and 10-point TP: at the user's ask 1.08512 the SL 1.08507 sits above the
    # bid 1.08500, where MT5 checks it. Pushed to 11 points under the bid (stops level 10).
    sig = signal(stop_loss=1.08495, take_profit=1.08510)
    cmd = one(adjust(sig, user(sizing_mode=SizingMode.FIXED_LOT, preferred_lot_size=0.1), NOW))
    assert cmd.stop_loss == 1.08489
    assert cmd.take_profit == 1.08522           # 22 points above the bid: kept
    assert "SL pushed out to 1.08489, 11 points from bid 1.08500 (broker stops level 10 points)" \
        in cmd.adjustment_reason
    assert "TP pushed" not in cmd.adjustment_reason


def test_a_level_exactly_at_the_stops_level_is_kept() -> None:
    # A 5-point spread: SL 1.08490 and TP 1.08510 lie exactly 10 points from the bid 1.08500.
    narrow = {**QUOTES, "EURUSD": quote(bid=1.08500, ask=1.08505)}
    cmd = one(adjust(signal(stop_loss=1.08485, take_profit=1.08505), user(quotes=narrow), NOW))
    assert (cmd.stop_loss, cmd.take_profit) == (1.08490, 1.08510)
    assert "pushed" not in cmd.adjustment_reason


def test_a_market_tp_clear_of_the_stops_level_but_inside_the_spread_goes_past_the_entry() -> None:
    # 12-point spread, stops level 10: a TP 10 points over the bid is still under the ask
    # the position opens at, i.e. a loss. It goes 1 point past the entry.
    cmd = one(adjust(signal(stop_loss=1.08478, take_profit=1.08498), user(), NOW))
    assert (cmd.stop_loss, cmd.take_profit) == (1.08490, 1.08513)
    assert "TP pushed out to 1.08513, 1 point from the entry 1.08512" in cmd.adjustment_reason


def test_market_sell_levels_are_checked_against_the_ask() -> None:
    # SELL at the bid 1.08500; TP 5 points below it is still under the ask 1.08512 by 17.
    # SL 8 points above the bid is 4 below the ask: pushed to 21 above the ask (stops 20).
    sig = signal(order_type=SELL, stop_loss=1.08498, take_profit=1.08485)
    specs = {**SPECS, "EURUSD": spec(stops_level=20)}
    cmd = one(adjust(sig, user(specs=specs), NOW))
    assert cmd.stop_loss == 1.08533
    assert cmd.take_profit == 1.08491           # 21 points under the ask
    assert "SL pushed out to 1.08533, 21 points from ask 1.08512" in cmd.adjustment_reason
    assert "TP pushed out to 1.08491, 21 points from ask 1.08512" in cmd.adjustment_reason


def test_pending_levels_are_checked_against_the_entry() -> None:
    sig = signal(order_type=OrderType.BUY_LIMIT, entry=1.08300, stop_loss=1.08297, take_profit=1.08700)
    cmd = one(adjust(sig, user(quotes=PENDING_QUOTES), NOW))
    assert cmd.entry_price == 1.08320
    assert cmd.stop_loss == 1.08309             # 11 points under the entry, not 3
    assert "11 points from the entry 1.08320" in cmd.adjustment_reason


def test_sizing_uses_the_pushed_out_stop_loss() -> None:
    # SL pushed to 1.08489: 23 points from the ask entry, + 20 allowed -> 99 USD / 43 USD = 2.30 lots.
    cmd = one(adjust(signal(stop_loss=1.08495), user(), NOW))
    assert cmd.stop_loss == 1.08489
    assert cmd.lot_size == 2.3


# ------------------------------------------------------------------------ command fields


def test_command_fields_carry_provenance() -> None:
    cmd = one(adjust(signal(), user(max_deviation_points=7), NOW))
    assert cmd.command_id == ids.command_id_for("sig-1", "alice", "open")
    assert cmd.user_id == "alice" and cmd.signal_id == "sig-1"
    assert cmd.created_at_ms == NOW and cmd.signal_created_at_ms == NOW - 1_000
    assert (cmd.quote_bid, cmd.quote_ask, cmd.quote_time_ms) == (1.08500, 1.08512, NOW - 200)
    assert cmd.reference_price == 1.08500 and cmd.confidence == 0.8
    assert cmd.reason == "breakout above the 50-bar high"
    assert cmd.max_deviation_points == 7
    assert cmd.expires_at_ms == NOW + 60_000    # the command TTL is sooner than the signal's expiry
    assert one(adjust(signal(reason=""), user(), NOW)).reason == "trend-follow"
    assert one(adjust(signal(), user(), NOW)).max_deviation_points == DEFAULT_MAX_DEVIATION_POINTS


def test_command_expiry_is_the_sooner_of_signal_and_ttl() -> None:
    assert one(adjust(signal(expires_at_ms=NOW + 5_000), user(), NOW)).expires_at_ms == NOW + 5_000
    assert one(adjust(signal(), user(), NOW, command_ttl_ms=10_000)).expires_at_ms == NOW + 10_000
    with pytest.raises(ValueError):
        adjust(signal(), user(), NOW, command_ttl_ms=0)


def test_command_ids_are_deterministic_per_signal_and_user() -> None:
    first = adjust(signal(), user("alice"), NOW)
    again = adjust(signal(), user("alice"), NOW + 1_500)
    other_user = adjust(signal(), user("bob"), NOW)
    other_signal = adjust(signal(signal_id="sig-2"), user("alice"), NOW)
    assert isinstance(first, Adjusted) and isinstance(again, Adjusted)
    assert first.commands[0].command_id == again.commands[0].command_id
    assert ids.is_command_id(first.commands[0].command_id)
    assert isinstance(other_user, Adjusted) and isinstance(other_signal, Adjusted)
    assert len({first.commands[0].command_id, other_user.commands[0].command_id,
                other_signal.commands[0].command_id}) == 3


def test_sizing_notes_travel_with_the_result() -> None:
    result = adjust(signal(), user(), NOW)
    assert isinstance(result, Adjusted)
    assert any("risk 1% of equity 10000.00" in note for note in result.notes)
    assert any("plus 20 points the price may move" in note for note in result.notes)


def test_the_sizing_inputs_travel_with_the_result() -> None:
    result = adjust(signal(), user(acc=account("JPY", 1_500_000)), NOW)
    assert isinstance(result, Adjusted) and result.sizing is not None
    inputs = result.sizing
    assert (inputs.equity, inputs.account_currency, inputs.risk_pct) == (1_500_000, "JPY", 1.0)
    assert inputs.move_allowance == pytest.approx(0.0002) and inputs.lots == result.commands[0].lot_size
    assert [(r.pair, r.side, r.value) for r in inputs.conversions] == [("USDJPY", "ask", 149.512)]
    # A skip decided by sizing says what it saw too.
    below = adjust(signal(), user(acc=account(equity=400.0)), NOW)
    assert isinstance(below, Skip) and below.sizing is not None and below.sizing.equity == 400.0


def test_eur_account_sizes_in_euros() -> None:
    # Profit in USD -> EUR at the EURUSD bid 1.08500: 0.9217 EUR per tick -> 99 / (520 x 0.9217) = 0.2066.
    assert one(adjust(signal(), user(acc=account("EUR")), NOW)).lot_size == 0.2


def test_jpy_account_sizes_in_yen() -> None:
    # USD profit -> JPY at the USDJPY ask 149.512; 1% of 1,500,000 JPY = 15,000 JPY, 14,850 spent.
    expected = int(14_850 / (520 * 149.512) / 0.01) / 100
    assert one(adjust(signal(), user(acc=account("JPY", 1_500_000)), NOW)).lot_size == expected == 0.19


def test_the_move_allowance_is_the_users_max_deviation_and_only_for_market_orders() -> None:
    # 5 points allowed: 99 / 505 = 0.196 -> 0.19; none: 99 / 500 = 0.198 -> 0.19; a 10-pip stop shows it:
    # 99 / (100 + 20) = 0.825 -> 0.82 by default, 99 / (100 + 5) = 0.94 with 5 points.
    tight = signal(stop_loss=1.08400)
    assert one(adjust(tight, user(), NOW)).lot_size == 0.82
    assert one(adjust(tight, user(max_deviation_points=5), NOW)).lot_size == 0.94
    # A pending order is checked by the agent at its own entry: no allowance, 99 / 100 = 0.99.
    limit = signal(order_type=OrderType.BUY_LIMIT, entry=1.08300, stop_loss=1.08200, take_profit=1.08700)
    assert one(adjust(limit, user(quotes=PENDING_QUOTES), NOW)).lot_size == 0.99


# ------------------------------------------------------------------------ skip reasons


def _stale_quotes() -> dict[str, Quote]:
    return {**QUOTES, "EURUSD": quote(age_ms=DEFAULT_MAX_QUOTE_AGE_MS + 1)}


@pytest.mark.parametrize(("reason", "sig", "state", "now"), [
    (SkipReason.EXPIRED_SIGNAL, signal(expires_at_ms=NOW), user(), NOW),
    (SkipReason.SIGNAL_TOO_OLD, signal(created_at_ms=NOW - 5_001), user(max_signal_age_ms=5_000), NOW),
    (SkipReason.PAUSED, signal(), user(paused=True), NOW),
    (SkipReason.STOPPED_OUT, signal(), user(stopped_out=True), NOW),
    (SkipReason.CLOSE_ONLY, signal(), user(close_only=True), NOW),
    (SkipReason.SYMBOL_NOT_TRADED, signal(), user(trading_symbols=frozenset({"USDJPY"})), NOW),
    (SkipReason.SYMBOL_NOT_TRADED, signal(), user(allowed_symbols=frozenset({"USDJPY"})), NOW),
    (SkipReason.MARKET_CLOSED, signal(expires_at_ms=SATURDAY + 1), user(), SATURDAY),
    (SkipReason.ROLLOVER, signal(created_at_ms=ROLLOVER_NOW - 1), user(), ROLLOVER_NOW),
    (SkipReason.NO_QUOTE, signal(), user(quotes={}), NOW),
    (SkipReason.STALE_QUOTE, signal(), user(quotes=_stale_quotes()), NOW),
    (SkipReason.WIDE_SPREAD, signal(), user(max_spread_points=11), NOW),      # spread is 12 points
    (SkipReason.NO_SPEC, signal(), user(specs={}), NOW),
    (SkipReason.NO_ACCOUNT, signal(), user(no_account=True), NOW),
    (SkipReason.NO_ACCOUNT, signal(), user(no_account=True, sizing_mode=SizingMode.EQUITY_MULTIPLIER), NOW),
    (SkipReason.LOT_BELOW_MINIMUM, signal(), user(acc=account(equity=400.0)), NOW),    # 0.0076 lots
    (SkipReason.NO_STOP_LOSS, signal(stop_loss=None), user(), NOW),
    (SkipReason.STALE_CONVERSION, signal(), user(acc=account("JPY", 1_500_000), quotes={
        **QUOTES, "USDJPY": quote("USDJPY", 149.500, 149.512, age_ms=DEFAULT_MAX_QUOTE_AGE_MS + 1, digits=3)}), NOW),
    (SkipReason.NO_CONVERSION, signal(), user(acc=account("CHF"), sizing_mode=SizingMode.EQUITY_MULTIPLIER,
                                              sizing_value=0.1), NOW),
    (SkipReason.INVALID_LEVELS, signal(order_type=OrderType.BUY_LIMIT, entry=1.08499, stop_loss=1.08000),
     user(), NOW),
])
def test_each_skip_reason(reason: SkipReason, sig: Signal, state: UserState, now: int) -> None:
    assert skipped(adjust(sig, state, now)) is reason


def test_skip_details_say_what_and_how_much() -> None:
    result = adjust(signal(), user(max_spread_points=11), NOW)
    assert isinstance(result, Skip) and result.detail == "EURUSD spread is 12 points, the maximum is 11"
    result = adjust(signal(), user(quotes=_stale_quotes()), NOW)
    assert isinstance(result, Skip) and "2001 ms old, the maximum is 2000 ms" in result.detail


def test_boundaries_of_the_guards() -> None:
    assert isinstance(adjust(signal(expires_at_ms=NOW + 1), user(), NOW), Adjusted)
    assert isinstance(adjust(signal(created_at_ms=NOW - 5_000), user(max_signal_age_ms=5_000), NOW), Adjusted)
    exactly_max_age = {**QUOTES, "EURUSD": quote(age_ms=DEFAULT_MAX_QUOTE_AGE_MS)}
    assert isinstance(adjust(signal(), user(quotes=exactly_max_age), NOW), Adjusted)
    assert isinstance(adjust(signal(), user(max_spread_points=12), NOW), Adjusted)
    assert isinstance(adjust(signal(), user(sizing_mode=SizingMode.FIXED_LOT, preferred_lot_size=0.1,
                                            no_account=True), NOW), Adjusted)
    # Without a stop loss only risk-% sizing has nothing to size by.
    assert one(adjust(signal(stop_loss=None), user(sizing_mode=SizingMode.FIXED_LOT, preferred_lot_size=0.1),
                      NOW)).lot_size == 0.1


def test_skip_order_first_problem_wins() -> None:
    """Start with every problem at once; fixing them one by one reveals the next reason
    in the documented order (cheapest and plainest first)."""
    problems: dict[str, object] = dict(
        expires=NOW, max_signal_age_ms=1, paused=True, stopped_out=True, close_only=True,
        trading_symbols=frozenset({"USDJPY"}), now=SATURDAY, quotes={}, specs={}, no_account=True, equity=100.0)

    def run() -> Adjusted | Skip:
        p = dict(problems)
        now, expires, equity = p.pop("now"), p.pop("expires"), p.pop("equity")
        assert isinstance(now, int) and isinstance(expires, int) and isinstance(equity, float)
        sig = signal(expires_at_ms=expires, created_at_ms=now - 1_000)
        return adjust(sig, user(acc=account(equity=equity), max_spread_points=20, **p), now)  # type: ignore[arg-type]

    fixes: list[tuple[SkipReason, dict[str, object]]] = [
        (SkipReason.EXPIRED_SIGNAL, dict(expires=NOW + 10 * 86_400_000)),
        (SkipReason.SIGNAL_TOO_OLD, dict(max_signal_age_ms=0)),
        (SkipReason.PAUSED, dict(paused=False)),
        (SkipReason.STOPPED_OUT, dict(stopped_out=False)),
        (SkipReason.CLOSE_ONLY, dict(close_only=False)),
        (SkipReason.SYMBOL_NOT_TRADED, dict(trading_symbols=frozenset({"EURUSD"}))),
        (SkipReason.MARKET_CLOSED, dict(now=ROLLOVER_NOW)),
        (SkipReason.ROLLOVER, dict(now=NOW)),
        (SkipReason.NO_QUOTE, dict(quotes=_stale_quotes())),
        (SkipReason.STALE_QUOTE, dict(quotes={"EURUSD": quote(bid=1.08500, ask=1.08600)})),   # 100 points wide
        (SkipReason.WIDE_SPREAD, dict(quotes=QUOTES)),
        (SkipReason.NO_SPEC, dict(specs=SPECS)),
        (SkipReason.NO_ACCOUNT, dict(no_account=False)),
        (SkipReason.LOT_BELOW_MINIMUM, dict(equity=10_000.0)),
    ]
    for reason, fix in fixes:
        assert skipped(run()) is reason
        problems.update(fix)
    assert isinstance(run(), Adjusted)


# --------------------------------------------------------------- close / modify / close all

POSITIONS = {"sig-open": (("mf1opened-a", 101), ("mf1opened-b", 102))}


def close_signal(**overrides: object) -> Signal:
    return signal(signal_id="sig-close", action=CLOSE, target_signal_id="sig-open", stop_loss=None,
                  take_profit=None, **overrides)


def test_close_fans_out_one_command_per_position() -> None:
    cmds = commands(adjust(close_signal(), user(positions=POSITIONS), NOW))
    assert [(c.position_ticket, c.target_command_id) for c in cmds] == [(101, "mf1opened-a"), (102, "mf1opened-b")]
    assert [c.command_id for c in cmds] == [ids.command_id_for("sig-close", "alice", "close:101"),
                                            ids.command_id_for("sig-close", "alice", "close:102")]
    assert all(c.type is CLOSE and c.lot_size == 0.0 and c.symbol == "EURUSD" for c in cmds)
    assert cmds[0].adjustment_reason == "close all of position 101"


def test_a_close_carries_the_reference_price_it_closes_at() -> None:
    # Closing a BUY sells at the bid: the reference bid 1.08490 is its original entry and reference price
    # (the agent's slippage against the reference compares the fill with it). Closing a SELL buys at the ask.
    for order_type, price in ((BUY, 1.08490), (SELL, 1.08500)):
        for cmd in (*commands(adjust(close_signal(order_type=order_type), user(positions=POSITIONS), NOW)),
                    one(adjust(close_all_signal(order_type=order_type), user(), NOW))):
            assert (cmd.original_entry, cmd.reference_price, cmd.price_adjustment) == (price, price, 0.0), cmd.type


def test_every_command_carries_an_original_entry() -> None:
    results = [adjust(signal(), user(), NOW), adjust(modify_signal(), user(positions=POSITIONS), NOW),
               adjust(close_signal(), user(positions=POSITIONS), NOW), adjust(close_all_signal(), user(), NOW)]
    sent = [command_message(cmd) for result in results for cmd in commands(result)]
    assert len(sent) == 6 and all(message.original_entry > 0 for message in sent)


def test_partial_close_uses_the_position_volume_when_known() -> None:
    cmds = commands(adjust(close_signal(close_fraction=0.5), user(positions=POSITIONS, volumes={101: 0.30}), NOW))
    assert [c.lot_size for c in cmds] == [0.15, 0.0]
    assert cmds[0].adjustment_reason == "close 50% of position 101: 0.15 of 0.3 lots"
    assert "volume of position 102 is unknown: close all of it" in cmds[1].adjustment_reason


def test_partial_close_rounds_down_to_the_step_and_never_below_the_minimum() -> None:
    # 33% of 0.25 lots is 0.0825: 0.08 on a 0.01 step, never the 0.09 nearest would give.
    (cmd, _) = commands(adjust(close_signal(close_fraction=0.33), user(positions=POSITIONS, volumes={101: 0.25}), NOW))
    assert cmd.lot_size == 0.08 and cmd.position_ticket == 101
    # A broker with a 0.10 lot minimum: 0.08 is raised to 0.10 (0.15 stays open).
    tenth = {**SPECS, "EURUSD": spec(volume_min=0.1)}
    (cmd, _) = commands(adjust(close_signal(close_fraction=0.33),
                               user(positions=POSITIONS, volumes={101: 0.25}, specs=tenth), NOW))
    assert cmd.lot_size == 0.1
    assert cmd.adjustment_reason == "close 33% of position 101: 0.1 of 0.25 lots"


def test_partial_close_that_would_leave_less_than_the_minimum_closes_everything() -> None:
    tenth = {**SPECS, "EURUSD": spec(volume_min=0.1)}
    # 70% of 0.25 = 0.175 -> 0.17, leaving 0.08: below 0.10, a position the broker could not close on its own.
    (cmd, _) = commands(adjust(close_signal(close_fraction=0.7),
                               user(positions=POSITIONS, volumes={101: 0.25}, specs=tenth), NOW))
    assert cmd.lot_size == 0.0
    assert "would leave 0.08 lots, below the broker's minimum 0.1: close all of it" in cmd.adjustment_reason
    # Exactly the minimum left is fine: 60% of 0.25 = 0.15, leaving 0.10.
    (cmd, _) = commands(adjust(close_signal(close_fraction=0.6),
                               user(positions=POSITIONS, volumes={101: 0.25}, specs=tenth), NOW))
    assert cmd.lot_size == 0.15


def test_partial_close_without_the_spec_closes_everything() -> None:
    # Closing is allowed without the user's spec, but then no lot fits the broker's step.
    (cmd, _) = commands(adjust(close_signal(close_fraction=0.5),
                               user(positions=POSITIONS, volumes={101: 0.30}, specs={}), NOW))
    assert cmd.lot_size == 0.0 and "volume step is unknown" in cmd.adjustment_reason


@settings(max_examples=300, deadline=None)
@given(fraction=st.floats(0.01, 0.99), steps=st.integers(1, 100), step=st.sampled_from([0.01, 0.1, 1.0]),
       min_steps=st.integers(1, 20))
def test_partial_close_lot_property(fraction: float, steps: int, step: float, min_steps: int) -> None:
    volume_min = float(Decimal(repr(step)) * min_steps)
    volume = float(Decimal(repr(step)) * max(steps, min_steps))   # a position the broker accepted
    specs = {**SPECS, "EURUSD": spec(volume_step=step, volume_min=volume_min, volume_max=100_000.0)}
    (cmd, _) = commands(adjust(close_signal(close_fraction=fraction),
                               user(positions=POSITIONS, volumes={101: volume}, specs=specs), NOW))
    lots = Decimal(repr(cmd.lot_size))
    if lots == 0:   # all of it: asking for a partial lot would have left less than the minimum
        asked = max(Decimal(repr(fraction * volume)) // Decimal(repr(step)) * Decimal(repr(step)),
                    Decimal(repr(volume_min)))
        assert Decimal(repr(volume)) - asked < Decimal(repr(volume_min)) * Decimal("1.000001")
        return
    assert lots % Decimal(repr(step)) == 0                                   # on the broker's grid
    assert lots >= Decimal(repr(volume_min))                                 # the broker accepts it
    assert lots <= max(Decimal(repr(fraction * volume)) * Decimal("1.000001"), Decimal(repr(volume_min)))
    assert Decimal(repr(volume)) - lots >= Decimal(repr(volume_min))         # what stays open can be closed


def test_a_position_reported_twice_is_closed_once() -> None:
    twice = {"sig-open": (("mf1opened-a", 101), ("mf1opened-a", 101))}
    assert len(commands(adjust(close_signal(), user(positions=twice), NOW))) == 1


def test_risk_reducing_commands_pass_paused_close_only_stopped_out_and_untraded_users() -> None:
    for state in (user(positions=POSITIONS, paused=True), user(positions=POSITIONS, close_only=True),
                  user(positions=POSITIONS, stopped_out=True), user(positions=POSITIONS, trading_symbols=frozenset()),
                  user(positions=POSITIONS, quotes={}, specs={}, no_account=True)):
        assert len(commands(adjust(close_signal(), state, NOW))) == 2
        assert len(commands(adjust(close_all_signal(), state, NOW))) == 1


def test_close_without_a_position_from_the_target_signal() -> None:
    other = {"sig-other": (("mf1opened-c", 103),)}
    assert skipped(adjust(close_signal(), user(positions=other), NOW)) is SkipReason.NO_POSITION
    assert skipped(adjust(close_signal(), user(), NOW)) is SkipReason.NO_POSITION


def test_risk_reducing_commands_still_wait_for_an_open_market() -> None:
    late = dict(expires_at_ms=SATURDAY + 1)
    assert skipped(adjust(close_signal(**late), user(positions=POSITIONS), SATURDAY)) is SkipReason.MARKET_CLOSED
    assert skipped(adjust(close_all_signal(**late), user(), SATURDAY)) is SkipReason.MARKET_CLOSED
    # The rollover window only stops new positions.
    in_rollover = close_signal(created_at_ms=ROLLOVER_NOW - 1_000)
    assert len(commands(adjust(in_rollover, user(positions=POSITIONS, quotes={}), ROLLOVER_NOW), ROLLOVER_NOW)) == 2
    assert skipped(adjust(close_signal(expires_at_ms=NOW), user(positions=POSITIONS), NOW)) \
        is SkipReason.EXPIRED_SIGNAL


def modify_signal(**overrides: object) -> Signal:
    base: dict[str, object] = dict(signal_id="sig-modify", action=MODIFY, target_signal_id="sig-open",
                                   stop_loss=1.08200, take_profit=1.09000)
    base.update(overrides)
    return signal(**base)


def test_modify_shifts_sl_and_tp_by_the_differential() -> None:
    # A BUY position: reference ask 1.08500, user ask 1.08512 -> every level +12 points.
    cmds = commands(adjust(modify_signal(), user(positions=POSITIONS, paused=True), NOW))
    assert [(c.stop_loss, c.take_profit) for c in cmds] == [(1.08212, 1.09012)] * 2
    assert [c.command_id for c in cmds] == [ids.command_id_for("sig-modify", "alice", "modify:101"),
                                            ids.command_id_for("sig-modify", "alice", "modify:102")]
    assert all(c.type is MODIFY and c.position_ticket in (101, 102) for c in cmds)
    assert cmds[0].price_adjustment == pytest.approx(0.00012, abs=1e-12)
    assert cmds[0].adjustment_reason.startswith("modify BUY: levels shifted by broker ask 1.08512 vs reference ask")


def test_modify_sell_uses_the_bid_differential_and_checks_against_the_ask() -> None:
    sig = modify_signal(order_type=SELL, stop_loss=1.08800, take_profit=1.08200)
    (cmd, _) = commands(adjust(sig, user(positions=POSITIONS), NOW))
    assert (cmd.stop_loss, cmd.take_profit) == (1.08810, 1.08210)          # bid 1.08500 vs 1.08490: +10
    # A new SL trailed to just above the market: pushed 11 points above the user's ask.
    (cmd, _) = commands(adjust(modify_signal(order_type=SELL, stop_loss=1.08505, take_profit=None),
                               user(positions=POSITIONS), NOW))
    assert cmd.stop_loss == 1.08523 and "SL pushed out to 1.08523, 11 points from ask 1.08512" \
        in cmd.adjustment_reason


def test_modify_needs_a_fresh_quote_and_a_spec() -> None:
    assert skipped(adjust(modify_signal(), user(positions=POSITIONS, quotes={}), NOW)) is SkipReason.NO_QUOTE
    assert skipped(adjust(modify_signal(), user(positions=POSITIONS, quotes=_stale_quotes()), NOW)) \
        is SkipReason.STALE_QUOTE
    assert skipped(adjust(modify_signal(), user(positions=POSITIONS, specs={}), NOW)) is SkipReason.NO_SPEC
    assert skipped(adjust(modify_signal(), user(), NOW)) is SkipReason.NO_POSITION
    nothing = modify_signal(stop_loss=None, take_profit=None)
    assert skipped(adjust(nothing, user(positions=POSITIONS), NOW)) is SkipReason.INVALID_LEVELS


def close_all_signal(**overrides: object) -> Signal:
    return signal(signal_id="sig-flat", action=CLOSE_ALL, stop_loss=None, take_profit=None, **overrides)


def test_close_all_is_one_command_per_user_for_the_symbol() -> None:
    cmd = one(adjust(close_all_signal(), user(paused=True), NOW))
    assert cmd.type is CLOSE_ALL and cmd.symbol == "EURUSD" and cmd.lot_size == 0.0
    assert cmd.command_id == ids.command_id_for("sig-flat", "alice", "close_all")
    assert cmd.adjustment_reason == "close every position of EURUSD"
    assert one(adjust(close_all_signal(), user("bob"), NOW)).command_id != cmd.command_id


# ----------------------------------------------------------------------------- policy


def read_config(config: config_pb2.ClientConfig) -> UserPolicy:
    """The policy of a ClientConfig as the worker reads it: checked at the edge, then mapped."""
    return policy_from_config(check_client_config(config, NOW, key=config.user_id))


def test_policy_from_config_defaults() -> None:
    config = config_pb2.ClientConfig(user_id="alice", tier_name="pro", tier=common_pb2.SUBSCRIPTION_TIER_PRO,
                                     trading_symbols=["EURUSD", "GBPUSD"])
    pol = read_config(config)
    # RiskProfile.allow_news_trading unset is false: the CRD's default (issue 17).
    assert pol == UserPolicy(user_id="alice", tier=SubscriptionTier.PRO, tier_name="pro",
                             trading_symbols=frozenset({"EURUSD", "GBPUSD"}), allow_news_trading=False)
    assert pol.max_quote_age_ms == 2_000 and pol.max_deviation_points == 20
    assert pol.sizing_mode is SizingMode.RISK_PERCENT and pol.max_risk_per_trade_pct == 1.0
    assert pol.max_spread_points == 0 and pol.max_signal_age_ms == 0 and pol.max_lot == 0


def test_policy_from_config_reads_every_field() -> None:
    config = config_pb2.ClientConfig(
        user_id="bob", tier=common_pb2.SUBSCRIPTION_TIER_CUSTOM, tier_name="gold", trading_symbols=["EURUSD"],
        paused=True, close_only=True, max_quote_age_ms=1_500, max_signal_age_ms=30_000,
        risk=account_pb2.RiskProfile(max_risk_per_trade=2.5, max_spread_points=25, max_lot=3.0,
                                     max_deviation_points=5, allowed_symbols=["EURUSD"], allow_news_trading=True),
        preferences=account_pb2.TradingPreferences(preferred_lot_size=0.2, conservative_mode=True,
                                                   sizing_mode=account_pb2.SIZING_MODE_EQUITY_MULTIPLIER,
                                                   sizing_value=0.05))
    assert read_config(config) == UserPolicy(
        user_id="bob", tier=SubscriptionTier.CUSTOM, tier_name="gold", trading_symbols=frozenset({"EURUSD"}),
        allowed_symbols=frozenset({"EURUSD"}), paused=True, close_only=True, max_spread_points=25,
        max_quote_age_ms=1_500, max_signal_age_ms=30_000, sizing_mode=SizingMode.EQUITY_MULTIPLIER,
        sizing_value=0.05, preferred_lot_size=0.2, max_risk_per_trade_pct=2.5, max_lot=3.0, conservative_mode=True,
        max_deviation_points=5, allow_news_trading=True)


def test_sizing_modes_mirror_the_proto() -> None:
    assert {mode.name: mode.value for mode in SizingMode} == {
        name.removeprefix("SIZING_MODE_"): value for name, value in account_pb2.SizingMode.items()}


def test_policy_refuses_nonsense() -> None:
    # The edge refuses a config the policy could not apply, naming the field ...
    with pytest.raises(ValidationError, match="sizing_mode"):
        read_config(config_pb2.ClientConfig(
            user_id="alice", preferences=account_pb2.TradingPreferences(sizing_mode=9)))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_lot"):
        read_config(config_pb2.ClientConfig(user_id="alice", risk=account_pb2.RiskProfile(max_lot=-1)))
    # ... and a policy built any other way still checks its own numbers.
    with pytest.raises(ValueError, match="max_risk_per_trade_pct"):
        UserPolicy(user_id="alice", max_risk_per_trade_pct=150.0)
    # An unknown tier is informational only.
    assert read_config(config_pb2.ClientConfig(user_id="a", tier=42)).tier is SubscriptionTier.UNSPECIFIED


# ------------------------------------------------------------------------- properties
# Prices are drawn in tenths of a point, so the reference carries one digit more than
# the user's broker (as OANDA does for gold) and rounding is exercised on every draw.

SYMBOLS = {"EURUSD": (5, 108_500), "USDJPY": (3, 149_500), "XAUUSD": (2, 195_000)}   # digits, price in points
SIDES = {OrderType.BUY_LIMIT: -1, OrderType.SELL_STOP: -1, OrderType.BUY_STOP: 1, OrderType.SELL_LIMIT: 1}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    symbol = draw(st.sampled_from(sorted(SYMBOLS)))
    digits, mid = SYMBOLS[symbol]
    order_type = draw(st.sampled_from(list(OrderType)))
    ref_bid_t = mid * 10 + draw(st.integers(-50_000, 50_000))
    ref_ask_t = ref_bid_t + draw(st.integers(0, 300))
    user_bid_p = ref_bid_t // 10 + draw(st.integers(-300, 300))
    user_ask_p = user_bid_p + draw(st.integers(0, 50))
    side_t = ref_ask_t if order_type.is_buy else ref_bid_t
    entry_t = side_t + SIDES.get(order_type, 0) * draw(st.integers(1, 20_000)) if order_type.is_pending else None
    base_t = side_t if entry_t is None else entry_t
    direction = 1 if order_type.is_buy else -1
    sl = draw(st.none() | st.integers(1, 50_000))
    tp = draw(st.none() | st.integers(1, 50_000))
    return dict(symbol=symbol, digits=digits, order_type=order_type, ref_bid_t=ref_bid_t, ref_ask_t=ref_ask_t,
                user_bid_p=user_bid_p, user_ask_p=user_ask_p, entry_t=entry_t,
                sl_t=None if sl is None else base_t - direction * sl,
                tp_t=None if tp is None else base_t + direction * tp,
                stops=draw(st.integers(0, 50)))


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_adjusted_levels_property(s: dict[str, object]) -> None:
    digits, kind, stops = s["digits"], s["order_type"], s["stops"]
    assert isinstance(digits, int) and isinstance(kind, OrderType) and isinstance(stops, int)
    point, tenth = Decimal(1).scaleb(-digits), Decimal(1).scaleb(-digits - 1)

    def ref(key: str) -> Decimal | None:
        value = s[key]
        return None if value is None else Decimal(value) * tenth  # type: ignore[arg-type]

    ref_bid, ref_ask, ref_entry_given, ref_sl, ref_tp = (ref(k) for k in ("ref_bid_t", "ref_ask_t", "entry_t",
                                                                           "sl_t", "tp_t"))
    user_bid, user_ask = Decimal(s["user_bid_p"]) * point, Decimal(s["user_ask_p"]) * point  # type: ignore[arg-type]
    symbol = str(s["symbol"])
    sig = signal(symbol=symbol, order_type=kind, reference_bid=float(ref_bid), reference_ask=float(ref_ask),
                 entry=None if ref_entry_given is None else float(ref_entry_given),
                 stop_loss=None if ref_sl is None else float(ref_sl),
                 take_profit=None if ref_tp is None else float(ref_tp))
    q = quote(symbol, float(user_bid), float(user_ask), digits=digits)
    # Without an SL, risk-% sizing skips the signal (tested above): a fixed lot lets its levels be checked.
    fixed: dict[str, Any] = {} if ref_sl is not None else dict(sizing_mode=SizingMode.FIXED_LOT)
    state = user(quotes={**QUOTES, symbol: q}, specs={**SPECS, symbol: spec(symbol, stops_level=stops)},
                 preferred_lot_size=0.1, **fixed)
    result = adjust(sig, state, NOW)

    # The independent calculation.
    buy = kind.is_buy
    user_side, ref_side = (user_ask, ref_ask) if buy else (user_bid, ref_bid)
    assert ref_side is not None
    ref_entry = ref_side if ref_entry_given is None else ref_entry_given
    entry = half_up(user_side if kind.is_market else ref_entry + user_side - ref_side, digits)
    if kind.is_pending:
        # Limits wait below (buy) / above (sell) the price, stops beyond it; at least the stops level away.
        gap = (entry - user_side) / point * SIDES[kind]
        if gap <= 0 or gap < stops:
            event("pending entry too close: skipped")
            assert isinstance(result, Skip) and result.reason is SkipReason.INVALID_LEVELS
            return
    cmd = one(result)
    assert Decimal(repr(cmd.entry_price)) == entry
    close_price = user_bid if buy else user_ask
    fences = [(entry, stops)] if kind.is_pending else [(close_price, stops), (entry, 0)]
    for name, ref_level, got, sign in (("SL", ref_sl, cmd.stop_loss, -1), ("TP", ref_tp, cmd.take_profit, 1)):
        sign = sign if buy else -sign
        if ref_level is None:
            assert got is None
            continue
        assert got is not None
        kept = half_up(entry + ref_level - ref_entry, digits)
        if all(0 < (kept - base) * sign / point >= gap_min for base, gap_min in fences):
            expected = kept
            # Distance preserved within one point of the reference distance.
            assert abs((kept - entry) - (ref_level - ref_entry)) <= point
        else:
            expected = max((half_up(base + sign * (gap_min + 1) * point, digits) for base, gap_min in fences),
                           key=lambda level: level * sign)
            assert f"{name} pushed out to" in cmd.adjustment_reason
            event(f"{name} pushed out")
        assert Decimal(repr(got)) == expected, (name, got, expected)
        # MT5 would accept it: at least the stops level away from where it is checked.
        base = entry if kind.is_pending else close_price
        assert (expected - base) * sign / point >= max(stops, 1)
    # Money at risk never exceeds the 99 USD spent of the 1% of 10,000 USD, not even after the
    # price of a market order moved the allowed 20 points away from the stop; lots on the step grid.
    assert (Decimal(repr(cmd.lot_size)) / Decimal("0.01")) % 1 == 0 and 0.01 <= cmd.lot_size <= 100
    if cmd.stop_loss is not None:
        sp = SPECS[symbol]
        per_tick = sp.contract_size * sp.tick_size / (float(user_bid) if symbol == "USDJPY" else 1.0)
        moved = 20 * sp.point if kind.is_market else 0.0
        distance = abs(cmd.entry_price - cmd.stop_loss) + moved  # type: ignore[operator]
        assert cmd.lot_size * distance / sp.tick_size * per_tick <= 99.0 * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(user_a=st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
       user_b=st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
       signal_id=st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True))
def test_command_ids_are_stable_and_distinct_per_user(user_a: str, user_b: str, signal_id: str) -> None:
    first = adjust(signal(signal_id=signal_id), user(user_a), NOW)
    again = adjust(signal(signal_id=signal_id), user(user_a), NOW + 999)
    other = adjust(signal(signal_id=signal_id), user(user_b), NOW)
    assert isinstance(first, Adjusted) and isinstance(again, Adjusted) and isinstance(other, Adjusted)
    assert first.commands[0].command_id == again.commands[0].command_id
    assert (first.commands[0].command_id == other.commands[0].command_id) == (user_a == user_b)
