"""Commands into MT5 trade requests, MT5 results into outcomes, and crash recovery.

The fakes are named tuples with the MetaTrader5 package's real field names (see
../shared/reference/metatrader5-api.txt), so code that works on them works on the real
``positions_get`` / ``orders_get`` / ``history_deals_get`` / ``order_send`` results.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.core.orders import (
    DEFAULT_DEVIATION_POINTS,
    SYMBOL_FILLING_FOK,
    SYMBOL_FILLING_IOC,
    FoundKind,
    RetcodeClass,
    classify,
    close_all_requests,
    close_requests,
    filling_for,
    find_by_command,
    modify_request,
    open_request,
    outcome,
    retcode_reason,
    slippage_points,
)
from mt5fleet.proto.domain.ids import MT5_COMMENT_MAX, command_id_for, magic_for
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType

TRADE_REQUEST_FIELDS = ("action", "magic", "order", "symbol", "volume", "price", "stoplimit", "sl", "tp",
                        "deviation", "type", "type_filling", "type_time", "expiration", "comment", "position",
                        "position_by")


class TradePosition(NamedTuple):
    ticket: int = 0
    time: int = 0
    time_msc: int = 0
    time_update: int = 0
    time_update_msc: int = 0
    type: int = mt5.POSITION_TYPE_BUY
    magic: int = 0
    identifier: int = 0
    reason: int = mt5.POSITION_REASON_EXPERT
    volume: float = 0.0
    price_open: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    price_current: float = 0.0
    swap: float = 0.0
    profit: float = 0.0
    symbol: str = ""
    comment: str = ""
    external_id: str = ""


class TradeOrder(NamedTuple):
    ticket: int = 0
    time_setup: int = 0
    time_setup_msc: int = 0
    time_done: int = 0
    time_done_msc: int = 0
    time_expiration: int = 0
    type: int = mt5.ORDER_TYPE_BUY_LIMIT
    type_time: int = mt5.ORDER_TIME_GTC
    type_filling: int = mt5.ORDER_FILLING_RETURN
    state: int = mt5.ORDER_STATE_PLACED
    magic: int = 0
    position_id: int = 0
    position_by_id: int = 0
    reason: int = mt5.ORDER_REASON_EXPERT
    volume_initial: float = 0.0
    volume_current: float = 0.0
    price_open: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    price_current: float = 0.0
    price_stoplimit: float = 0.0
    symbol: str = ""
    comment: str = ""
    external_id: str = ""


class TradeDeal(NamedTuple):
    ticket: int = 0
    order: int = 0
    time: int = 0
    time_msc: int = 0
    type: int = mt5.DEAL_TYPE_BUY
    entry: int = mt5.DEAL_ENTRY_IN
    magic: int = 0
    position_id: int = 0
    reason: int = mt5.DEAL_REASON_EXPERT
    volume: float = 0.0
    price: float = 0.0
    commission: float = 0.0
    swap: float = 0.0
    profit: float = 0.0
    fee: float = 0.0
    symbol: str = ""
    comment: str = ""
    external_id: str = ""


class OrderSendResult(NamedTuple):
    retcode: int = mt5.TRADE_RETCODE_DONE
    deal: int = 0
    order: int = 0
    volume: float = 0.0
    price: float = 0.0
    bid: float = 0.0
    ask: float = 0.0
    comment: str = ""
    request_id: int = 0
    retcode_external: int = 0
    request: Any = None


class Tick(NamedTuple):
    time: int = 0
    bid: float = 0.0
    ask: float = 0.0
    last: float = 0.0
    volume: int = 0
    time_msc: int = 0
    flags: int = 0
    volume_real: float = 0.0


NOW_MS = 1_704_812_400_000
BID, ASK = 1.08500, 1.08512
OPEN_ID = command_id_for("sig-1", "alice")
CLOSE_ID = command_id_for("sig-2", "alice", "close")
EURUSD = SymbolSpecInfo(symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=0.00001,
                        contract_size=100_000, tick_size=0.00001, tick_value=1.0, volume_min=0.01,
                        volume_max=100.0, volume_step=0.01, filling_modes=SYMBOL_FILLING_IOC)


def command(**overrides: Any) -> Command:
    fields: dict[str, Any] = dict(
        command_id=OPEN_ID, user_id="alice", type=CommandType.OPEN_POSITION, symbol="EURUSD",
        order_type=OrderType.BUY, lot_size=0.10, entry_price=ASK, stop_loss=1.08012, take_profit=1.09512,
        created_at_ms=NOW_MS - 1_000, expires_at_ms=NOW_MS + 60_000)
    return Command(**{**fields, **overrides})


def close_command(**overrides: Any) -> Command:
    return command(**{**dict(command_id=CLOSE_ID, type=CommandType.CLOSE_POSITION, lot_size=0.0, entry_price=None,
                             stop_loss=None, take_profit=None, position_ticket=5001), **overrides})


def position(**overrides: Any) -> TradePosition:
    """The 0.10-lot EURUSD buy that OPEN_ID opened."""
    return TradePosition(**{**dict(ticket=5001, identifier=5001, magic=magic_for(OPEN_ID), volume=0.10,
                                   price_open=ASK, sl=1.08012, tp=1.09512, price_current=BID,
                                   symbol="EURUSD.m", comment=OPEN_ID), **overrides})


def open_market(cmd: Command | None = None, **kwargs: Any) -> dict[str, Any]:
    return open_request(cmd or command(), **{**dict(broker_symbol="EURUSD.m", tick_bid=BID, tick_ask=ASK,
                                                    spec=EURUSD, default_deviation=10), **kwargs})


# ---------------------------------------------------------------------------- filling


def test_symbol_filling_flags_are_mql5s_values():
    assert (SYMBOL_FILLING_FOK, SYMBOL_FILLING_IOC) == (1, 2)


@pytest.mark.parametrize(("flags", "expected"), [
    (SYMBOL_FILLING_FOK, mt5.ORDER_FILLING_FOK),
    (SYMBOL_FILLING_IOC, mt5.ORDER_FILLING_IOC),
    (SYMBOL_FILLING_FOK | SYMBOL_FILLING_IOC, mt5.ORDER_FILLING_FOK),   # all or nothing first
    (0, mt5.ORDER_FILLING_RETURN),
])
@pytest.mark.parametrize("mode", [mt5.SYMBOL_TRADE_EXECUTION_MARKET, mt5.SYMBOL_TRADE_EXECUTION_EXCHANGE])
def test_market_and_exchange_execution_follow_the_symbols_flags(flags, expected, mode):
    assert filling_for(flags, mode) == expected


@pytest.mark.parametrize("mode", [mt5.SYMBOL_TRADE_EXECUTION_REQUEST, mt5.SYMBOL_TRADE_EXECUTION_INSTANT])
def test_request_and_instant_execution_fill_or_kill_deals_and_return_pending(mode):
    assert filling_for(SYMBOL_FILLING_IOC, mode) == mt5.ORDER_FILLING_FOK
    assert filling_for(SYMBOL_FILLING_IOC, mode, pending=True) == mt5.ORDER_FILLING_RETURN


# ------------------------------------------------------------------------------- open


def test_market_buy_is_a_deal_at_the_ask_tagged_with_the_command():
    request = open_market()
    assert tuple(request) == TRADE_REQUEST_FIELDS
    assert request["action"] == mt5.TRADE_ACTION_DEAL and request["type"] == mt5.ORDER_TYPE_BUY
    assert (request["symbol"], request["volume"], request["price"]) == ("EURUSD.m", 0.10, ASK)
    assert (request["sl"], request["tp"]) == (1.08012, 1.09512)
    assert request["comment"] == OPEN_ID and len(request["comment"]) <= MT5_COMMENT_MAX
    assert request["magic"] == magic_for(OPEN_ID)
    assert request["type_filling"] == mt5.ORDER_FILLING_IOC and request["type_time"] == mt5.ORDER_TIME_GTC


def test_market_sell_is_a_deal_at_the_bid():
    request = open_market(command(order_type=OrderType.SELL, entry_price=BID, stop_loss=1.09, take_profit=1.08))
    assert (request["type"], request["price"]) == (mt5.ORDER_TYPE_SELL, BID)


def test_market_order_uses_the_latest_tick_not_the_workers_quote():
    request = open_market(tick_ask=1.08530)
    assert request["price"] == 1.08530


def test_deviation_comes_from_the_command_else_the_default():
    assert open_market()["deviation"] == 10
    assert open_market(command(max_deviation_points=3))["deviation"] == 3


def test_pending_order_waits_at_the_commands_entry_until_cancelled():
    cmd = command(order_type=OrderType.SELL_STOP, entry_price=1.080001, stop_loss=1.0850, take_profit=1.0700)
    request = open_market(cmd)
    assert request["action"] == mt5.TRADE_ACTION_PENDING and request["type"] == mt5.ORDER_TYPE_SELL_STOP
    assert request["price"] == 1.08 and request["type_time"] == mt5.ORDER_TIME_GTC
    assert request["deviation"] == 0


def test_pending_order_fills_return_under_instant_execution():
    cmd = command(order_type=OrderType.BUY_LIMIT, entry_price=1.08, stop_loss=1.075)
    request = open_market(cmd, execution_mode=mt5.SYMBOL_TRADE_EXECUTION_INSTANT)
    assert request["type_filling"] == mt5.ORDER_FILLING_RETURN


def test_levels_are_rounded_to_the_symbols_digits_and_none_is_zero():
    request = open_market(command(stop_loss=1.080123456, take_profit=None))
    assert (request["sl"], request["tp"]) == (1.08012, 0.0)
    jpy = replace(EURUSD, digits=3, point=0.001)
    assert open_market(command(stop_loss=149.51249), spec=jpy, tick_ask=150.0121)["sl"] == 149.512


def test_only_open_commands_become_open_requests():
    with pytest.raises(ValueError, match="OPEN_POSITION"):
        open_market(close_command())


def test_pending_order_without_entry_is_refused():
    with pytest.raises(ValueError, match="entry price"):
        open_market(command(order_type=OrderType.BUY_LIMIT, entry_price=None))


# ------------------------------------------------------------------------------ close


def test_closing_a_buy_sells_its_whole_volume_at_the_bid():
    [request] = close_requests(close_command(), [position()], tick_bid=BID, tick_ask=ASK, hedging=True)
    assert tuple(request) == TRADE_REQUEST_FIELDS
    assert request["action"] == mt5.TRADE_ACTION_DEAL and request["type"] == mt5.ORDER_TYPE_SELL
    assert (request["volume"], request["price"], request["position"]) == (0.10, BID, 5001)
    assert request["comment"] == CLOSE_ID and request["magic"] == magic_for(CLOSE_ID)
    assert request["deviation"] == DEFAULT_DEVIATION_POINTS


def test_closing_a_sell_buys_at_the_ask():
    short = position(type=mt5.POSITION_TYPE_SELL)
    [request] = close_requests(close_command(), [short], tick_bid=BID, tick_ask=ASK, hedging=True)
    assert (request["type"], request["price"]) == (mt5.ORDER_TYPE_BUY, ASK)


def test_partial_close_takes_the_commands_lots():
    [request] = close_requests(close_command(lot_size=0.04), [position()], tick_bid=BID, tick_ask=ASK, hedging=True)
    assert request["volume"] == 0.04


def test_partial_close_never_exceeds_the_position():
    [request] = close_requests(close_command(lot_size=0.5), [position()], tick_bid=BID, tick_ask=ASK, hedging=True)
    assert request["volume"] == 0.10


def test_netting_account_closes_by_an_opposite_deal_without_a_ticket():
    [request] = close_requests(close_command(), [position()], tick_bid=BID, tick_ask=ASK, hedging=False)
    assert request["position"] == 0 and request["type"] == mt5.ORDER_TYPE_SELL


def test_close_finds_the_position_by_the_opening_commands_magic():
    cmd = close_command(position_ticket=None, target_command_id=OPEN_ID)
    rewritten = position(comment="[sl 1.08012]")  # brokers rewrite comments, never the magic
    assert len(close_requests(cmd, [rewritten, position(ticket=7, magic=1, comment="manual")],
                              tick_bid=BID, tick_ask=ASK, hedging=True)) == 1


def test_close_finds_the_position_by_a_comment_the_broker_cut_short():
    cmd = close_command(position_ticket=None, target_command_id=OPEN_ID)
    cut = position(magic=0, comment=OPEN_ID[:16])
    [request] = close_requests(cmd, [cut], tick_bid=BID, tick_ask=ASK, hedging=True)
    assert request["position"] == 5001


def test_a_too_short_comment_names_no_command():
    cmd = close_command(position_ticket=None, target_command_id=OPEN_ID)
    assert close_requests(cmd, [position(magic=0, comment=OPEN_ID[:6])], tick_bid=BID, tick_ask=ASK,
                          hedging=True) == []


def test_no_matching_position_gives_no_request():
    assert close_requests(close_command(position_ticket=999), [position()], tick_bid=BID, tick_ask=ASK,
                          hedging=True) == []


def test_partial_close_spreads_over_the_commands_positions_in_order():
    cmd = close_command(position_ticket=None, target_command_id=OPEN_ID, lot_size=0.15)
    requests = close_requests(cmd, [position(), position(ticket=5002)], tick_bid=BID, tick_ask=ASK, hedging=True)
    assert [(r["position"], r["volume"]) for r in requests] == [(5001, 0.10), (5002, 0.05)]


@settings(max_examples=200, deadline=None)
@given(lot=st.integers(0, 300).map(lambda n: n / 100),
       volumes=st.lists(st.integers(1, 200).map(lambda n: n / 100), min_size=1, max_size=4))
def test_partial_closes_never_exceed_the_positions_or_the_commands_lots(lot, volumes):
    held = [position(ticket=5001 + i, volume=v) for i, v in enumerate(volumes)]
    cmd = close_command(position_ticket=None, target_command_id=OPEN_ID, lot_size=lot)
    requests = close_requests(cmd, held, tick_bid=BID, tick_ask=ASK, hedging=True)
    by_ticket = {p.ticket: p.volume for p in held}
    assert all(0 < r["volume"] <= by_ticket[r["position"]] for r in requests)
    total = sum(r["volume"] for r in requests)
    assert total == pytest.approx(lot if 0 < lot < sum(volumes) else sum(volumes))


# ----------------------------------------------------------------------------- modify


def test_modify_a_position_sends_new_sl_and_tp():
    cmd = close_command(type=CommandType.MODIFY_POSITION, stop_loss=1.084001, take_profit=1.1)
    request = modify_request(cmd, position(), digits=5)
    assert request["action"] == mt5.TRADE_ACTION_SLTP
    assert (request["position"], request["symbol"], request["sl"], request["tp"]) == (5001, "EURUSD.m", 1.084, 1.1)


def test_modify_never_removes_a_stop_the_command_leaves_empty():
    cmd = close_command(type=CommandType.MODIFY_POSITION, take_profit=1.1)
    assert modify_request(cmd, position())["sl"] == 1.08012


def test_modify_a_pending_order_keeps_its_price_kind_and_expiry():
    order = TradeOrder(ticket=6001, type=mt5.ORDER_TYPE_BUY_LIMIT, type_time=mt5.ORDER_TIME_SPECIFIED,
                       time_expiration=1_704_900_000, volume_current=0.1, price_open=1.08, sl=1.075, tp=1.09,
                       symbol="EURUSD.m")
    cmd = close_command(type=CommandType.MODIFY_POSITION, position_ticket=6001, stop_loss=1.076)
    request = modify_request(cmd, order)
    assert request["action"] == mt5.TRADE_ACTION_MODIFY and request["order"] == 6001
    assert (request["price"], request["sl"], request["tp"]) == (1.08, 1.076, 1.09)
    assert (request["type"], request["type_time"], request["expiration"]) == (
        mt5.ORDER_TYPE_BUY_LIMIT, mt5.ORDER_TIME_SPECIFIED, 1_704_900_000)


def test_modify_of_a_pending_order_can_move_its_entry():
    order = TradeOrder(ticket=6001, volume_current=0.1, price_open=1.08, symbol="EURUSD.m")
    cmd = close_command(type=CommandType.MODIFY_POSITION, order_type=OrderType.BUY_LIMIT, entry_price=1.0795)
    assert modify_request(cmd, order)["price"] == 1.0795


# -------------------------------------------------------------------------- close all


def test_close_all_closes_every_position_and_removes_every_pending_order():
    positions = [position(), position(ticket=5002, type=mt5.POSITION_TYPE_SELL, symbol="GBPUSD.m", volume=0.3)]
    orders = [TradeOrder(ticket=6001, symbol="EURUSD.m", volume_current=0.1)]
    ticks = {"EURUSD.m": Tick(bid=BID, ask=ASK), "GBPUSD.m": Tick(bid=1.265, ask=1.26515)}
    requests = close_all_requests(positions, orders, symbol=None, ticks=ticks, command_id=CLOSE_ID,
                                  fillings={"GBPUSD.m": mt5.ORDER_FILLING_IOC})
    closes, removals = requests[:2], requests[2:]
    assert [(r["position"], r["type"], r["price"], r["volume"]) for r in closes] == [
        (5001, mt5.ORDER_TYPE_SELL, BID, 0.10), (5002, mt5.ORDER_TYPE_BUY, 1.26515, 0.3)]
    assert [r["type_filling"] for r in closes] == [mt5.ORDER_FILLING_FOK, mt5.ORDER_FILLING_IOC]
    assert [(r["action"], r["order"]) for r in removals] == [(mt5.TRADE_ACTION_REMOVE, 6001)]
    assert all(r["comment"] == CLOSE_ID and tuple(r) == TRADE_REQUEST_FIELDS for r in requests)


def test_close_all_of_one_symbol_leaves_the_others():
    positions = [position(), position(ticket=5002, symbol="GBPUSD.m")]
    orders = [TradeOrder(ticket=6001, symbol="GBPUSD.m")]
    requests = close_all_requests(positions, orders, symbol="EURUSD.m", ticks={})
    assert [r["position"] for r in requests] == [5001]


def test_close_all_without_a_tick_uses_the_positions_current_price():
    [request] = close_all_requests([position(price_current=1.08490)], [], symbol=None, ticks={})
    assert request["price"] == 1.08490


def test_close_all_on_a_netting_account_names_no_ticket():
    [request] = close_all_requests([position()], [], symbol=None, ticks={}, hedging=False)
    assert request["position"] == 0


# --------------------------------------------------------------------------- recovery


def test_a_command_never_sent_is_not_found():
    assert find_by_command(OPEN_ID, [position(ticket=7, magic=1, comment="")], [], []) is None


def test_filled_command_is_found_in_its_deals_with_the_average_price():
    deals = [TradeDeal(ticket=9001, order=8001, position_id=5001, magic=magic_for(OPEN_ID), volume=0.06,
                       price=1.08512, symbol="EURUSD.m"),
             TradeDeal(ticket=9002, order=8001, position_id=5001, magic=magic_for(OPEN_ID), volume=0.04,
                       price=1.08522, symbol="EURUSD.m")]
    found = find_by_command(OPEN_ID, [position()], [], deals)
    assert found is not None and found.kind is FoundKind.DEALS
    assert (found.deal_ticket, found.order_ticket, found.position_ticket) == (9001, 8001, 5001)
    assert found.volume == pytest.approx(0.10) and found.price == pytest.approx(1.08516)


def test_the_brokers_stop_loss_deal_is_not_the_commands_fill():
    sl_exit = TradeDeal(ticket=9003, magic=magic_for(OPEN_ID), reason=mt5.DEAL_REASON_SL, type=mt5.DEAL_TYPE_SELL,
                        entry=mt5.DEAL_ENTRY_OUT, volume=0.1, price=1.08012, symbol="EURUSD.m")
    assert find_by_command(OPEN_ID, [], [], [sl_exit]) is None


def test_placed_pending_order_is_found_by_its_comment():
    order = TradeOrder(ticket=6001, comment=OPEN_ID, volume_current=0.1, price_open=1.08, symbol="EURUSD.m")
    found = find_by_command(OPEN_ID, [], [order], [])
    assert found is not None and (found.kind, found.order_ticket, found.volume) == (FoundKind.ORDER, 6001, 0.1)


def test_open_position_is_found_when_history_is_not_loaded():
    found = find_by_command(OPEN_ID, [position(comment="[tp 1.09512]")], [], [])
    assert found is not None and (found.kind, found.position_ticket, found.price) == (FoundKind.POSITION, 5001, ASK)


def test_another_commands_trades_are_not_found():
    other = command_id_for("sig-9", "alice")
    assert find_by_command(other, [position()], [], []) is None


# ---------------------------------------------------------------------------- retcodes


@pytest.mark.parametrize(("retcode", "kind"), [
    (mt5.TRADE_RETCODE_DONE, RetcodeClass.DONE),
    (mt5.TRADE_RETCODE_DONE_PARTIAL, RetcodeClass.PARTIAL),
    (mt5.TRADE_RETCODE_PLACED, RetcodeClass.PLACED),
    (mt5.TRADE_RETCODE_REQUOTE, RetcodeClass.REQUOTE),
    (mt5.TRADE_RETCODE_PRICE_CHANGED, RetcodeClass.REQUOTE),
    (mt5.TRADE_RETCODE_PRICE_OFF, RetcodeClass.REQUOTE),
    (mt5.TRADE_RETCODE_MARKET_CLOSED, RetcodeClass.MARKET_CLOSED),
    (mt5.TRADE_RETCODE_NO_MONEY, RetcodeClass.REJECTED),
    (mt5.TRADE_RETCODE_INVALID_STOPS, RetcodeClass.REJECTED),
    (12345, RetcodeClass.REJECTED),
])
def test_retcodes_are_classified(retcode, kind):
    assert classify(retcode) is kind


def test_every_other_retcode_is_a_rejection():
    special = {mt5.TRADE_RETCODE_DONE, mt5.TRADE_RETCODE_DONE_PARTIAL, mt5.TRADE_RETCODE_PLACED,
               mt5.TRADE_RETCODE_REQUOTE, mt5.TRADE_RETCODE_PRICE_CHANGED, mt5.TRADE_RETCODE_PRICE_OFF,
               mt5.TRADE_RETCODE_MARKET_CLOSED}
    others = {v for k, v in vars(mt5).items() if k.startswith("TRADE_RETCODE_")} - special
    assert others and all(classify(code) is RetcodeClass.REJECTED for code in others)


def test_retcode_reasons_say_it_in_words_with_the_name():
    assert retcode_reason(mt5.TRADE_RETCODE_NO_MONEY) == "not enough free margin (TRADE_RETCODE_NO_MONEY 10019)"
    assert "TRADE_RETCODE_LOCKED 10028" in retcode_reason(mt5.TRADE_RETCODE_LOCKED)
    assert "unknown retcode 4" in retcode_reason(4)


# ---------------------------------------------------------------------------- outcome


def filled(**overrides: Any) -> OrderSendResult:
    return OrderSendResult(**{**dict(deal=9001, order=8001, volume=0.10, price=ASK, bid=BID, ask=ASK,
                                     comment="Request executed"), **overrides})


def test_ipc_failure_is_failed_not_rejected():
    result = outcome(command(), open_market(), None, EURUSD, last_error=(-10004, "No IPC connection"))
    assert (result.status, result.retcode, result.retcode_class) == ("FAILED", 0, None)
    assert "No IPC connection (-10004)" in result.reason


def test_a_fill_at_the_requested_price_has_no_slippage():
    result = outcome(command(), open_market(), filled(), EURUSD)
    assert (result.status, result.fill_price, result.filled_volume) == ("FILLED", ASK, 0.10)
    assert (result.order_ticket, result.deal_ticket, result.position_ticket) == (8001, 9001, 8001)
    assert result.slippage_points == 0.0


def test_buying_two_points_higher_is_two_points_of_slippage():
    assert outcome(command(), open_market(), filled(price=1.08514), EURUSD).slippage_points == 2.0


def test_selling_two_points_lower_is_two_points_of_slippage():
    sell = command(order_type=OrderType.SELL, entry_price=BID, stop_loss=1.09, take_profit=1.08)
    assert outcome(sell, open_market(sell), filled(price=1.08498), EURUSD).slippage_points == 2.0


def test_a_better_fill_is_negative_slippage():
    assert outcome(command(), open_market(), filled(price=1.08509), EURUSD).slippage_points == -3.0


def test_slippage_against_the_reference_entry():
    with_entry = command(reference_price=1.08500, original_entry=1.08490)
    assert outcome(with_entry, open_market(), filled(), EURUSD).slippage_reference_points == 22.0
    only_reference_quote = command(reference_price=1.08500)
    assert outcome(only_reference_quote, open_market(), filled(), EURUSD).slippage_reference_points == 12.0
    assert outcome(command(), open_market(), filled(), EURUSD).slippage_reference_points == 0.0


def test_slippage_is_against_the_adjusted_entry_not_the_live_price_sent():
    # The worker adjusted the entry to 1.08512; by execution the ask was 1.08509 and the fill 1.08514.
    request = open_request(command(), broker_symbol="EURUSD", tick_bid=1.08497, tick_ask=1.08509, spec=EURUSD,
                           default_deviation=20)
    result = outcome(command(), request, filled(price=1.08514), EURUSD)
    assert request["price"] == 1.08509 and result.slippage_points == 2.0   # not 5: against the entry


def test_partial_fill_reports_the_filled_volume():
    result = outcome(command(), open_market(), filled(retcode=mt5.TRADE_RETCODE_DONE_PARTIAL, volume=0.04), EURUSD)
    assert (result.status, result.filled_volume) == ("PARTIAL", 0.04)


def test_placed_pending_order_counts_as_filled_with_nothing_filled_yet():
    cmd = command(order_type=OrderType.BUY_LIMIT, entry_price=1.08, stop_loss=1.075)
    placed = OrderSendResult(retcode=mt5.TRADE_RETCODE_PLACED, order=6001, volume=0.1)
    result = outcome(cmd, open_market(cmd), placed, EURUSD)
    assert (result.status, result.order_ticket, result.fill_price, result.filled_volume) == (
        "FILLED", 6001, None, 0.0)


@pytest.mark.parametrize(("retcode", "retry"), [(mt5.TRADE_RETCODE_REQUOTE, True),
                                                (mt5.TRADE_RETCODE_PRICE_CHANGED, True),
                                                (mt5.TRADE_RETCODE_MARKET_CLOSED, False),
                                                (mt5.TRADE_RETCODE_NO_MONEY, False)])
def test_only_requotes_may_be_retried_at_a_fresh_price(retcode, retry):
    result = outcome(command(), open_market(), OrderSendResult(retcode=retcode, comment="x"), EURUSD)
    assert result.status == "REJECTED" and result.may_retry_at_fresh_price is retry


def test_a_rejection_says_why_in_words_and_in_the_brokers_comment():
    result = outcome(command(), open_market(), OrderSendResult(retcode=mt5.TRADE_RETCODE_NO_MONEY,
                                                               comment="No money"), EURUSD)
    assert result.reason == "not enough free margin (TRADE_RETCODE_NO_MONEY 10019); broker: No money"
    assert (result.fill_price, result.filled_volume, result.slippage_points) == (None, 0.0, 0.0)


def test_a_close_reports_the_position_it_closed():
    [request] = close_requests(close_command(), [position()], tick_bid=BID, tick_ask=ASK, hedging=True)
    result = outcome(close_command(), request, filled(price=1.08497, order=8002), EURUSD)
    assert result.position_ticket == 5001 and result.slippage_points == 3.0   # sold 3 points lower


def test_a_fill_without_a_price_reports_no_slippage():
    result = outcome(command(), open_market(), filled(price=0.0), EURUSD)
    assert (result.status, result.fill_price, result.slippage_points) == ("FILLED", None, 0.0)


PRICES = st.integers(50_000, 200_000).map(lambda n: n / 100_000)


@settings(max_examples=200, deadline=None)
@given(requested=PRICES, points=st.integers(1, 500), is_buy=st.booleans())
def test_slippage_sign_is_the_traders_view_for_both_directions(requested, points, is_buy):
    point = 0.00001
    worse = requested + points * point if is_buy else requested - points * point
    better = requested - points * point if is_buy else requested + points * point
    assert slippage_points(requested, requested, point, is_buy=is_buy) == 0.0
    assert slippage_points(worse, requested, point, is_buy=is_buy) > 0
    assert slippage_points(better, requested, point, is_buy=is_buy) < 0
    assert slippage_points(worse, requested, point, is_buy=is_buy) == pytest.approx(points, abs=1e-3)
