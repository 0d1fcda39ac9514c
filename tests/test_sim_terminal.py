"""The simulated MetaTrader 5 terminal: what the agent and its users rely on.

Every test runs on an injected clock (no sleeps, no wall time) and a seeded feed, so the
scenarios are exact: where a test needs the price to cross a level, it looks the crossing
up in the future ticks of a second terminal whose clock is ahead.
"""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest

from mt5fleet.client.sim.broker import BROKERS, BrokerProfile
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.server_clock import NEW_YORK_CLOSE, ServerZone
from mt5fleet.client.sim.server_clock import UTC as UTC_ZONE
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5
from mt5fleet.proto.domain import ids, sessions

WEDNESDAY_NOON = datetime(2024, 3, 6, 12, tzinfo=UTC).timestamp()
SATURDAY_NOON = datetime(2024, 3, 9, 12, tzinfo=UTC).timestamp()
FRIDAY_CLOSE = datetime(2024, 3, 8, 22, tzinfo=UTC).timestamp()  # 17:00 New York, winter time
SUNDAY_OPEN = datetime(2024, 3, 10, 21, tzinfo=UTC).timestamp()  # 17:00 New York, summer time (DST that day)
FEED = ReferenceFeed(seed=11)


class Clock:
    def __init__(self, t: float = WEDNESDAY_NOON) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def quiet(key: str, **changes: Any) -> BrokerProfile:
    """A preset without random rejects, requotes and slippage: exact expectations."""
    return BROKERS[key].evolve(reject_probability=0.0, requote_probability=0.0, slippage_probability=0.0, **changes)


def terminal(profile: BrokerProfile, clock: Clock | None = None, seed: int = 0) -> SimulatedMetaTrader5:
    sim = SimulatedMetaTrader5(profile, FEED, clock=clock or Clock(), seed=seed)
    assert sim.initialize()
    return sim


def filling(sim: SimulatedMetaTrader5, symbol: str) -> int:
    return sim.ORDER_FILLING_FOK if sim.symbol_info(symbol).filling_mode & 1 else sim.ORDER_FILLING_IOC


def market(sim: SimulatedMetaTrader5, symbol: str, side: int, volume: float, **extra: Any) -> Any:
    tick = sim.symbol_info_tick(symbol)
    request = {"action": sim.TRADE_ACTION_DEAL, "symbol": symbol, "volume": volume, "type": side,
               "price": tick.ask if side == sim.ORDER_TYPE_BUY else tick.bid, "deviation": 20,
               "type_filling": filling(sim, symbol), **extra}
    return sim.order_send(request)


def utc_s(sim: SimulatedMetaTrader5, server_s: float) -> int:
    """A time the terminal reported (server time) as the simulation's clock reads it (UTC)."""
    return sim.broker.server_zone.to_utc_s(int(server_s))


def server_s(sim: SimulatedMetaTrader5, clock: Clock) -> int:
    """The clock's now as the terminal's date arguments take it: server time."""
    return sim.broker.server_zone.to_server_s(int(clock()))


def first_tick(sim: SimulatedMetaTrader5, clock: Clock, symbol: str, seconds: int, condition: Any) -> Any:
    """The first future tick (within ``seconds``) meeting ``condition``, read off a terminal ahead in time."""
    now = server_s(sim, clock)
    ahead = terminal(sim.broker, Clock(clock() + seconds + 1))
    for start in range(now + 1, now + seconds + 1, 900):  # a quarter of an hour at a time: stop early
        end = min(start + 899, now + seconds)
        for tick in ahead.copy_ticks_range(symbol, start, end, sim.COPY_TICKS_ALL):
            if condition(tick):
                return tick
    raise AssertionError(f"no tick within {seconds} s met the condition")


# -- quotes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(BROKERS))
def test_quotes_carry_the_broker_suffix_spread_and_offset(key: str) -> None:
    sim = terminal(BROKERS[key])
    profile = BROKERS[key]
    names = [info.name for info in sim.symbols_get()]
    assert names and all(name.endswith(profile.suffix) for name in names)
    assert sim.symbols_total() == len(names) == len(FEED.symbols)
    t_ms = int(WEDNESDAY_NOON * 1000)
    for canonical in FEED.symbols:
        info = sim.symbol_info(canonical + profile.suffix)
        tick = sim.symbol_info_tick(info.name)
        assert round((tick.ask - tick.bid) / info.point) == info.spread
        broker_mid, reference_mid = (tick.bid + tick.ask) / 2, FEED.mid(canonical, t_ms)
        assert abs((broker_mid - reference_mid) / info.point - profile.offset_for(canonical)) <= 1
        assert info.digits == FEED.digits(canonical)
    if profile.suffix:
        assert sim.symbol_info("EURUSD") is None
        assert sim.last_error() == (sim.RES_E_NOT_FOUND, "Terminal: Not found")


def test_brokers_quote_the_same_moment_differently() -> None:
    ticks = {key: terminal(profile).symbol_info_tick("EURUSD" + profile.suffix) for key, profile in BROKERS.items()}
    assert len({(t.bid, t.ask) for t in ticks.values()}) == len(BROKERS)
    spreads = {key: round((t.ask - t.bid) * 1e5) for key, t in ticks.items()}
    assert spreads["icm-raw"] < spreads["exness-m"] < spreads["fbs-cent"]


def test_symbol_info_is_a_full_record_with_account_currency_tick_value() -> None:
    sim = terminal(BROKERS["exness-m"])
    info = sim.symbol_info("USDJPY.m")
    assert len(info) == 96 and info._asdict()["name"] == "USDJPY.m"
    assert (info.digits, info.point, info.trade_tick_size, info.trade_contract_size) == (3, 0.001, 0.001, 100_000)
    assert (info.currency_base, info.currency_profit, info.currency_margin) == ("USD", "JPY", "USD")
    usdjpy = sim.symbol_info_tick("USDJPY.m")
    assert info.trade_tick_value == pytest.approx(100 / ((usdjpy.bid + usdjpy.ask) / 2), rel=1e-6)
    assert sim.symbol_info("EURUSD.m").trade_tick_value == pytest.approx(1.0)
    assert (info.trade_stops_level, info.trade_freeze_level, info.filling_mode) == (10, 5, 2)
    assert info.path == "Forex\\Majors\\USDJPY.m" and info.description
    assert sim.symbol_select("USDJPY.m", False) and not sim.symbol_info("USDJPY.m").select
    assert sim.symbol_select("USDJPY.m", True) and sim.symbol_info("USDJPY.m").visible


def test_feed_is_deterministic_whatever_the_order_of_queries() -> None:
    start = int(WEDNESDAY_NOON * 1000)
    times = [start + i * 7_919 for i in range(200)]
    forward = [FEED.quote("GBPJPY", t) for t in times]
    fresh = ReferenceFeed(seed=11)
    backward = [fresh.quote("GBPJPY", t) for t in reversed(times)]
    assert forward == backward[::-1]
    assert ReferenceFeed(seed=12).quote("GBPJPY", start) != forward[0]
    bid, ask = FEED.quote("XAUUSD", start)
    assert FEED.digits("XAUUSD") == 2 and 1500 < bid < ask < 4000
    assert FEED.digits("USDJPY") == 3 and FEED.digits("EURUSD") == 5


def test_crosses_stay_consistent_with_their_legs() -> None:
    t_ms = int(WEDNESDAY_NOON * 1000) + 3_600_000
    eurjpy = FEED.mid("EURJPY", t_ms)
    assert eurjpy == pytest.approx(FEED.mid("EURUSD", t_ms) * FEED.mid("USDJPY", t_ms), rel=1e-9)


# -- determinism ----------------------------------------------------------------------------


def _session(seed: int) -> list[Any]:
    clock = Clock()
    sim = terminal(BROKERS["fbs-cent"], clock, seed=seed)
    seen: list[Any] = []
    for step in range(25):
        clock.t += 37
        seen.append(market(sim, "EURUSDi", sim.ORDER_TYPE_BUY if step % 2 else sim.ORDER_TYPE_SELL, 0.05))
        seen.append(sim.positions_get())
    seen += [sim.account_info(), sim.history_deals_get(0, clock.t + 60), sim.history_orders_get(0, clock.t + 60)]
    return seen


def test_same_seed_and_clock_replay_identically() -> None:
    assert _session(3) == _session(3)
    assert _session(3) != _session(4)  # the seed drives requotes, rejects and slippage


# -- market orders --------------------------------------------------------------------------


def test_market_buy_fills_at_the_ask_after_the_latency() -> None:
    clock = Clock()
    sim = terminal(quiet("fbs-cent"), clock)
    result = market(sim, "EURUSDi", sim.ORDER_TYPE_BUY, 0.1)
    assert result.retcode == sim.TRADE_RETCODE_DONE and result.deal and result.order
    clock.t += sim.broker.latency_ms / 1000
    assert result.price == sim.symbol_info_tick("EURUSDi").ask
    position, = sim.positions_get(symbol="EURUSDi")
    assert (position.price_open, position.volume, position.type) == (result.price, 0.1, sim.POSITION_TYPE_BUY)


def test_requote_beyond_deviation_on_instant_execution() -> None:
    sim = terminal(quiet("fbs-cent"))
    tick = sim.symbol_info_tick("EURUSDi")
    result = sim.order_send({"action": sim.TRADE_ACTION_DEAL, "symbol": "EURUSDi", "volume": 0.1,
                             "type": sim.ORDER_TYPE_BUY, "price": round(tick.ask - 0.0005, 5), "deviation": 10})
    assert result.retcode == sim.TRADE_RETCODE_REQUOTE and result.comment == "Requote"
    assert result.bid > 0 and result.ask > result.bid and result.deal == 0
    assert sim.positions_total() == 0


def test_market_execution_ignores_deviation_and_slippage_stays_bounded() -> None:
    sim = terminal(BROKERS["icm-raw"].evolve(reject_probability=0.0, slippage_probability=1.0, slippage_max_points=4,
                                             latency_ms=0))
    for _ in range(20):
        tick = sim.symbol_info_tick("EURUSD.raw")
        result = sim.order_send({"action": sim.TRADE_ACTION_DEAL, "symbol": "EURUSD.raw", "volume": 0.01,
                                 "type": sim.ORDER_TYPE_BUY, "price": round(tick.ask - 0.01, 5), "deviation": 0})
        assert result.retcode == sim.TRADE_RETCODE_DONE
        assert 1 <= round(abs(result.price - tick.ask) * 1e5) <= 4


def test_random_rejects_and_requotes_follow_the_profile() -> None:
    sim = terminal(BROKERS["fbs-cent"].evolve(reject_probability=0.5, requote_probability=0.5))
    codes = {market(sim, "EURUSDi", sim.ORDER_TYPE_BUY, 0.01).retcode for _ in range(40)}
    assert codes == {sim.TRADE_RETCODE_DONE, sim.TRADE_RETCODE_REJECT, sim.TRADE_RETCODE_REQUOTE}


def test_order_check_reports_margin_and_the_retcode_send_would_give() -> None:
    sim = terminal(quiet("exness-m"))
    tick = sim.symbol_info_tick("EURUSD.m")
    request = {"action": sim.TRADE_ACTION_DEAL, "symbol": "EURUSD.m", "volume": 1.0, "type": sim.ORDER_TYPE_BUY,
               "price": tick.ask, "type_filling": sim.ORDER_FILLING_IOC}
    check = sim.order_check(request)
    assert check.retcode == 0 and check.comment == "Done"
    assert check.margin == pytest.approx(100_000 * (tick.bid + tick.ask) / 2 / 200, abs=0.01)
    assert check.margin_free == pytest.approx(check.equity - check.margin, abs=0.01)
    assert sim.order_check({**request, "volume": 0.001}).retcode == sim.TRADE_RETCODE_INVALID_VOLUME
    assert sim.order_check({**request, "type_filling": sim.ORDER_FILLING_FOK}).retcode == sim.TRADE_RETCODE_INVALID_FILL
    assert sim.positions_total() == 0  # checking trades nothing


# -- pending orders and SL/TP ---------------------------------------------------------------


@pytest.mark.parametrize("order_type", ["ORDER_TYPE_BUY_LIMIT", "ORDER_TYPE_SELL_STOP"])
def test_pending_order_triggers_when_the_price_crosses(order_type: str) -> None:
    clock = Clock()
    sim = terminal(quiet("icm-raw"), clock)
    kind = getattr(sim, order_type)
    now = sim.symbol_info_tick("EURUSD.raw")
    low = first_tick(sim, clock, "EURUSD.raw", 4 * 3600, lambda t: t.bid < now.bid - 0.0010)
    price = round(now.bid - 0.0008, 5) if kind == sim.ORDER_TYPE_SELL_STOP else round(low.ask + 0.00001, 5)
    placed = sim.order_send({"action": sim.TRADE_ACTION_PENDING, "symbol": "EURUSD.raw", "volume": 0.2, "type": kind,
                             "price": price, "type_filling": sim.ORDER_FILLING_RETURN, "magic": 7, "comment": "dip"})
    assert placed.retcode == sim.TRADE_RETCODE_PLACED and sim.orders_total() == 1
    order, = sim.orders_get(ticket=placed.order)
    assert (order.price_open, order.state, order.magic, order.comment) == (price, sim.ORDER_STATE_PLACED, 7, "dip")
    clock.t = utc_s(sim, low.time)
    assert sim.orders_total() == 0
    position, = sim.positions_get()
    assert position.ticket == placed.order and position.magic == 7 and position.volume == 0.2
    if kind == sim.ORDER_TYPE_BUY_LIMIT:
        assert position.price_open <= price
    filled, = sim.history_orders_get(ticket=placed.order)
    assert filled.state == sim.ORDER_STATE_FILLED and filled.position_id == position.ticket


def test_pending_orders_modify_remove_and_expire() -> None:
    clock = Clock()
    sim = terminal(quiet("eu-netting"), clock)
    ask = sim.symbol_info_tick("EURUSD").ask
    base = {"symbol": "EURUSD", "volume": 0.1, "type": sim.ORDER_TYPE_BUY_LIMIT}
    placed = sim.order_send({"action": sim.TRADE_ACTION_PENDING, **base, "price": round(ask - 0.02, 5)})
    modified = sim.order_send({"action": sim.TRADE_ACTION_MODIFY, "order": placed.order, "price": round(ask - 0.03, 5),
                               "sl": round(ask - 0.04, 5)})
    assert modified.retcode == sim.TRADE_RETCODE_DONE
    assert sim.orders_get()[0][16:18] == (round(ask - 0.03, 5), round(ask - 0.04, 5))  # price_open, sl
    removed = sim.order_send({"action": sim.TRADE_ACTION_REMOVE, "order": placed.order})
    assert removed.retcode == sim.TRADE_RETCODE_DONE and sim.orders_total() == 0
    assert sim.history_orders_get(ticket=placed.order)[0].state == sim.ORDER_STATE_CANCELED
    expiring = sim.order_send({"action": sim.TRADE_ACTION_PENDING, **base, "price": round(ask - 0.02, 5),
                               "type_time": sim.ORDER_TIME_SPECIFIED, "expiration": int(clock.t) + 600})
    clock.t += 601
    assert sim.orders_total() == 0
    assert sim.history_orders_get(ticket=expiring.order)[0].state == sim.ORDER_STATE_EXPIRED
    too_close = sim.order_send({"action": sim.TRADE_ACTION_PENDING, **base, "price": ask + 0.001})
    assert too_close.retcode == sim.TRADE_RETCODE_INVALID_PRICE


@pytest.mark.parametrize("level", ["sl", "tp"])
def test_sl_or_tp_hit_closes_and_realises_the_result_into_the_balance(level: str) -> None:
    clock = Clock()
    sim = terminal(quiet("icm-raw"), clock)
    balance = sim.account_info().balance
    now = sim.symbol_info_tick("EURUSD.raw")
    move = first_tick(sim, clock, "EURUSD.raw", 6 * 3600, lambda t: abs(t.bid - now.bid) > 0.0015)
    down = move.bid < now.bid
    side = sim.ORDER_TYPE_BUY if down == (level == "sl") else sim.ORDER_TYPE_SELL
    target = round(now.bid + (-0.0012 if down else 0.0012), 5)
    opened = market(sim, "EURUSD.raw", side, 0.5, **{level: target}, magic=99)
    assert opened.retcode == sim.TRADE_RETCODE_DONE
    clock.t = utc_s(sim, move.time)
    assert sim.positions_total() == 0
    opening, closing = sim.history_deals_get(position=opened.order)
    assert closing.entry == sim.DEAL_ENTRY_OUT and closing.magic == 99
    assert closing.reason == (sim.DEAL_REASON_SL if level == "sl" else sim.DEAL_REASON_TP)
    assert closing.comment == f"[{level} {target:.5f}]"
    assert (closing.profit < 0) == (level == "sl")
    assert sim.account_info().balance == pytest.approx(balance + closing.profit, abs=0.005)
    assert sim.account_info().equity == sim.account_info().balance


def test_sltp_action_modifies_a_position() -> None:
    sim = terminal(quiet("exness-m"))
    opened = market(sim, "EURUSD.m", sim.ORDER_TYPE_SELL, 0.1)
    ask = sim.symbol_info_tick("EURUSD.m").ask
    request = {"action": sim.TRADE_ACTION_SLTP, "position": opened.order, "symbol": "EURUSD.m",
               "sl": round(ask + 0.005, 5), "tp": round(ask - 0.005, 5)}
    assert sim.order_send(request).retcode == sim.TRADE_RETCODE_DONE
    assert sim.positions_get()[0][11:13] == (round(ask + 0.005, 5), round(ask - 0.005, 5))
    assert sim.order_send(request).retcode == sim.TRADE_RETCODE_NO_CHANGES
    inside = {**request, "sl": round(ask + 0.00005, 5)}  # within the stops level of 10 points
    assert sim.order_send(inside).retcode == sim.TRADE_RETCODE_INVALID_STOPS


def test_stop_out_closes_the_losing_position() -> None:
    clock = Clock()
    sim = terminal(quiet("icm-raw", balance=100.0, leverage=1000, stop_out_level=100.0), clock)
    now = sim.symbol_info_tick("XAUUSD.raw")
    drop = first_tick(sim, clock, "XAUUSD.raw", 12 * 3600, lambda t: t.bid < now.bid - 1.0)
    assert market(sim, "XAUUSD.raw", sim.ORDER_TYPE_BUY, 0.3).retcode == sim.TRADE_RETCODE_DONE
    assert sim.account_info().margin_level > 100
    clock.t = utc_s(sim, drop.time)
    assert sim.positions_total() == 0
    closing = sim.history_deals_get(0, server_s(sim, clock) + 1)[-1]
    assert closing.reason == sim.DEAL_REASON_SO and closing.comment.startswith("[so ")


# -- netting and hedging --------------------------------------------------------------------


def test_netting_keeps_one_position_and_reduces_closes_and_reverses_it() -> None:
    sim = terminal(quiet("exness-m"))
    opened = market(sim, "EURUSD.m", sim.ORDER_TYPE_BUY, 0.3)
    market(sim, "EURUSD.m", sim.ORDER_TYPE_BUY, 0.2)
    position, = sim.positions_get()
    assert position.volume == 0.5 and position.ticket == opened.order
    reduced = market(sim, "EURUSD.m", sim.ORDER_TYPE_SELL, 0.1)
    assert sim.history_deals_get(ticket=reduced.deal)[0].entry == sim.DEAL_ENTRY_OUT
    assert sim.positions_get()[0].volume == 0.4
    reversed_ = market(sim, "EURUSD.m", sim.ORDER_TYPE_SELL, 0.7)
    position, = sim.positions_get()
    assert (position.type, position.volume, position.identifier) == (sim.POSITION_TYPE_SELL, 0.3, opened.order)
    assert sim.history_deals_get(ticket=reversed_.deal)[0].entry == sim.DEAL_ENTRY_INOUT
    market(sim, "EURUSD.m", sim.ORDER_TYPE_BUY, 0.3)
    assert sim.positions_total() == 0
    deals = sim.history_deals_get(position=opened.order)
    assert sim.account_info().balance == pytest.approx(10_000 + sum(d.profit for d in deals), abs=0.01)


def test_hedging_keeps_positions_apart_and_closes_them_partially_by_ticket() -> None:
    sim = terminal(quiet("icm-raw"))
    buy = market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1)
    sell = market(sim, "EURUSD.raw", sim.ORDER_TYPE_SELL, 0.1)
    assert sim.positions_total() == 2 and buy.order != sell.order
    partial = market(sim, "EURUSD.raw", sim.ORDER_TYPE_SELL, 0.04, position=buy.order)
    assert partial.retcode == sim.TRADE_RETCODE_DONE
    assert sim.positions_get(ticket=buy.order)[0].volume == 0.06
    deal, = sim.history_deals_get(ticket=partial.deal)
    assert (deal.entry, deal.volume, deal.position_id) == (sim.DEAL_ENTRY_OUT, 0.04, buy.order)
    too_much = market(sim, "EURUSD.raw", sim.ORDER_TYPE_SELL, 0.5, position=buy.order)
    assert too_much.retcode == sim.TRADE_RETCODE_INVALID_CLOSE_VOLUME
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_SELL, 0.06, position=buy.order).retcode == sim.TRADE_RETCODE_DONE
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_SELL, 0.06, position=buy.order).retcode == \
        sim.TRADE_RETCODE_POSITION_CLOSED
    assert [p.ticket for p in sim.positions_get()] == [sell.order]


def test_close_helpers_of_the_package() -> None:
    sim = terminal(quiet("icm-raw"))
    assert sim.Buy("EURUSD.raw", 0.1).retcode == sim.TRADE_RETCODE_DONE
    assert sim.Sell("EURUSD.raw", 0.2).retcode == sim.TRADE_RETCODE_DONE
    assert sim.Close("EURUSD.raw") is True and sim.positions_total() == 0


# -- money ----------------------------------------------------------------------------------


def test_margin_free_margin_and_profit_in_the_account_currency() -> None:
    sim = terminal(quiet("exness-m"))
    market(sim, "USDJPY.m", sim.ORDER_TYPE_BUY, 1.0)
    account = sim.account_info()
    assert account.margin == pytest.approx(100_000 / 200, rel=1e-3)  # USD base: 1 lot / leverage
    assert account.equity == pytest.approx(account.balance + account.profit, abs=0.01)
    assert account.margin_free == pytest.approx(account.equity - account.margin, abs=0.01)
    assert account.margin_level == pytest.approx(account.equity / account.margin * 100, abs=0.01)
    usdjpy = sim.symbol_info_tick("USDJPY.m")
    profit = sim.order_calc_profit(sim.ORDER_TYPE_BUY, "USDJPY.m", 1.0, usdjpy.ask, usdjpy.ask + 1.0)
    assert profit == pytest.approx(100_000 / ((usdjpy.bid + usdjpy.ask) / 2), rel=1e-3)
    assert sim.order_calc_margin(sim.ORDER_TYPE_SELL, "EURUSD.m", 1.0, 1.1) == pytest.approx(550.0)
    assert sim.order_calc_margin(99, "EURUSD.m", 1.0, 1.1) is None


def test_eur_and_cent_accounts_convert_margin_and_profit() -> None:
    eu = terminal(quiet("eu-netting"))
    assert eu.order_calc_margin(eu.ORDER_TYPE_BUY, "EURUSD", 1.0, eu.symbol_info_tick("EURUSD").ask) == \
        pytest.approx(100_000 / 30, rel=2e-3)  # EUR base on a EUR account: lots / leverage
    cent = terminal(quiet("fbs-cent"))
    assert cent.account_info().currency == "USC" and cent.account_info().balance == 100_000
    assert cent.order_calc_profit(cent.ORDER_TYPE_BUY, "EURUSDi", 0.01, 1.1, 1.1010) == pytest.approx(100.0)


def test_not_enough_money() -> None:
    sim = terminal(quiet("eu-netting"))
    result = market(sim, "EURUSD", sim.ORDER_TYPE_BUY, 10.0)  # 10 lots at 1:30 on 5,000 EUR
    assert result.retcode == sim.TRADE_RETCODE_NO_MONEY and sim.positions_total() == 0


# -- the trade server's refusals ------------------------------------------------------------


def test_invalid_volume_stops_and_filling() -> None:
    sim = terminal(quiet("exness-m"))
    for volume in (0.001, 0.015, 1000.0):
        assert market(sim, "EURUSD.m", sim.ORDER_TYPE_BUY, volume).retcode == sim.TRADE_RETCODE_INVALID_VOLUME
    bid = sim.symbol_info_tick("EURUSD.m").bid
    for sl in (round(bid - 0.00005, 5), round(bid + 0.001, 5)):  # inside the stops level; on the wrong side
        assert market(sim, "EURUSD.m", sim.ORDER_TYPE_BUY, 0.1, sl=sl).retcode == sim.TRADE_RETCODE_INVALID_STOPS
    fok = market(sim, "EURUSD.m", sim.ORDER_TYPE_BUY, 0.1, type_filling=sim.ORDER_FILLING_FOK)
    assert fok.retcode == sim.TRADE_RETCODE_INVALID_FILL
    assert sim.positions_total() == 0


def test_bad_request_values_fail_like_the_package() -> None:
    sim = terminal(quiet("icm-raw"))
    assert sim.order_send({"action": sim.TRADE_ACTION_DEAL, "symbol": "EURUSD.raw", "volume": "1"}) is None
    assert sim.last_error() == (sim.RES_E_INVALID_PARAMS, 'Invalid "volume" argument')
    assert sim.positions_get("EURUSD.raw") is None
    assert sim.last_error() == (sim.RES_E_INVALID_PARAMS, "Unnamed arguments not allowed")
    with pytest.raises(TypeError):
        sim.symbol_info()


def test_weekend_market_closed_and_quotes_frozen() -> None:
    clock = Clock(SATURDAY_NOON)
    sim = terminal(quiet("icm-raw"), clock)
    tick = sim.symbol_info_tick("EURUSD.raw")
    assert utc_s(sim, tick.time) == FRIDAY_CLOSE and not FEED.is_open(int(clock.t * 1000))
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1).retcode == sim.TRADE_RETCODE_MARKET_CLOSED
    clock.t += 6 * 3600
    assert sim.symbol_info_tick("EURUSD.raw") == tick
    clock.t = SUNDAY_OPEN + 60
    assert sim.symbol_info_tick("EURUSD.raw") != tick
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1).retcode == sim.TRADE_RETCODE_DONE


def test_market_hours_agree_with_the_shared_sessions_module() -> None:
    start = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
    instants = [start + i * 997_000 for i in range(3_000)] + [int(FRIDAY_CLOSE * 1000), int(SUNDAY_OPEN * 1000)]
    assert [FEED.is_open(t) for t in instants] == [sessions.is_market_open(t) for t in instants]


def test_trading_switches_of_the_terminal() -> None:
    clock = Clock()
    sim = terminal(quiet("icm-raw"), clock)
    sim.set_trade_allowed(False)
    assert not sim.terminal_info().trade_allowed
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1).retcode == sim.TRADE_RETCODE_CLIENT_DISABLES_AT
    sim.set_trade_allowed(True)
    sim.set_tradeapi_disabled(True)
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1) is None
    assert sim.last_error()[0] == sim.RES_E_AUTO_TRADING_DISABLED
    sim.set_tradeapi_disabled(False)
    sim.set_server_connected(False)
    stale = sim.symbol_info_tick("EURUSD.raw")
    clock.t += 120
    assert sim.symbol_info_tick("EURUSD.raw") == stale and not sim.terminal_info().connected
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1).retcode == sim.TRADE_RETCODE_CONNECTION
    sim.set_server_connected(True)
    assert market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1).retcode == sim.TRADE_RETCODE_DONE


# -- the IPC link ---------------------------------------------------------------------------


def test_calls_fail_before_initialize_and_after_shutdown() -> None:
    sim = SimulatedMetaTrader5(BROKERS["icm-raw"], FEED, clock=Clock())
    assert sim.account_info() is None and sim.version() is None
    assert sim.last_error() == (sim.RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
    assert not sim.initialize(login=1, password="wrong")
    assert sim.last_error()[0] == sim.RES_E_AUTH_FAILED
    profile = sim.broker
    assert sim.initialize("C:\\mt5\\terminal64.exe", login=profile.login, password=profile.password,
                          server=profile.server, timeout=5_000)
    assert sim.version()[0] == 500 and sim.last_error() == (sim.RES_S_OK, "Success")
    sim.shutdown()
    assert sim.positions_total() is None and sim.last_error()[0] == sim.RES_E_INTERNAL_FAIL_CONNECT


def test_ipc_failure_injection_and_recovery() -> None:
    sim = terminal(quiet("icm-raw"))
    opened = market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1)
    sim.fail_ipc()
    assert sim.symbol_info_tick("EURUSD.raw") is None
    assert sim.last_error() == (sim.RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
    assert not sim.initialize() and sim.last_error()[0] == sim.RES_E_INTERNAL_FAIL_INIT
    sim.restore_ipc()
    assert sim.positions_get() is None  # still disconnected until the agent re-initialises
    assert sim.initialize()
    assert [p.ticket for p in sim.positions_get()] == [opened.order]  # the account survived
    sim.fail_ipc(sim.RES_E_INTERNAL_FAIL_TIMEOUT, calls=1)
    assert sim.account_info() is None and sim.last_error() == (sim.RES_E_INTERNAL_FAIL_TIMEOUT, "IPC timeout")
    assert sim.account_info() is not None


# -- what crash recovery depends on ---------------------------------------------------------


def test_comment_is_cut_to_31_characters_and_magic_kept_everywhere() -> None:
    sim = terminal(quiet("icm-raw"))
    command_id = ids.command_id_for("signal-1", "alice")
    magic = ids.magic_for(command_id)
    opened = market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1, comment=command_id, magic=magic)
    long_comment = "x" * 40
    ask = sim.symbol_info_tick("EURUSD.raw").ask
    pending = sim.order_send({"action": sim.TRADE_ACTION_PENDING, "symbol": "EURUSD.raw", "volume": 0.1,
                              "type": sim.ORDER_TYPE_BUY_LIMIT, "price": round(ask - 0.01, 5),
                              "comment": long_comment, "magic": magic})
    assert sim.orders_get()[0].comment == "x" * 31 and sim.orders_get()[0].magic == magic
    assert pending.request.comment == "x" * 31
    position, = sim.positions_get()
    assert (position.comment, position.magic) == (command_id, magic)
    t = server_s(sim, Clock(WEDNESDAY_NOON))
    found = [d for d in sim.history_deals_get(t - 60, t + 60) if d.comment == command_id]
    assert [(d.order, d.magic, d.position_id) for d in found] == [(opened.order, magic, opened.order)]
    order, = sim.history_orders_get(position=opened.order)
    assert (order.comment, order.magic, order.state) == (command_id, magic, sim.ORDER_STATE_FILLED)
    assert sim.history_deals_total(t - 60, t + 60) == 2  # the deposit and the deal
    assert sim.history_orders_get(t - 60, t + 60, group="*USD*")[0].ticket == opened.order


# -- the trade server's clock ---------------------------------------------------------------

SUMMER_NOON = datetime(2024, 7, 10, 12, tzinfo=UTC).timestamp()
HOUR = 3600


@pytest.mark.parametrize(("zone", "moment", "offset_s"), [
    (NEW_YORK_CLOSE, WEDNESDAY_NOON, 2 * HOUR), (NEW_YORK_CLOSE, SUMMER_NOON, 3 * HOUR), (UTC_ZONE, SUMMER_NOON, 0)])
def test_every_time_the_terminal_reports_is_server_time(zone: ServerZone, moment: float, offset_s: int) -> None:
    """As the real package does: times are the trade server's, stamped as if they were UTC."""
    clock = Clock(moment)
    sim = terminal(quiet("icm-raw", server_zone=zone), clock)
    server_now = int(moment) + offset_s
    tick = sim.symbol_info_tick("EURUSD.raw")
    assert tick.time == server_now and tick.time_msc == server_now * 1000
    assert sim.symbol_info("EURUSD.raw").time == server_now
    opened = market(sim, "EURUSD.raw", sim.ORDER_TYPE_BUY, 0.1)
    ask = sim.symbol_info_tick("EURUSD.raw").ask
    pending = sim.order_send({"action": sim.TRADE_ACTION_PENDING, "symbol": "EURUSD.raw", "volume": 0.1,
                              "type": sim.ORDER_TYPE_BUY_LIMIT, "price": round(ask - 0.01, 5)})
    position, = sim.positions_get()
    assert (position.time, position.time_update_msc) == (server_now, server_now * 1000)
    assert sim.orders_get(ticket=pending.order)[0].time_setup_msc == server_now * 1000
    deal = sim.history_deals_get(ticket=opened.deal)[0]
    order = sim.history_orders_get(ticket=opened.order)[0]
    assert (deal.time, deal.time_msc, order.time_setup, order.time_done) == (
        server_now, server_now * 1000, server_now, server_now)
    # Date arguments are server time too: a range around the UTC instant misses the deal on a GMT+2/+3 server.
    assert opened.deal in [d.ticket for d in sim.history_deals_get(server_now - 60, server_now + 60)]
    assert (opened.deal in [d.ticket for d in sim.history_deals_get(int(moment) - 60, int(moment) + 60)]) == (
        offset_s == 0)
    assert sim.copy_ticks_from("EURUSD.raw", server_now - 5, 10, sim.COPY_TICKS_ALL)[-1].time == server_now
    assert sim.copy_rates_from_pos("EURUSD.raw", sim.TIMEFRAME_M1, 0, 1)[0].time == server_now - server_now % 60


@pytest.mark.parametrize(("friday", "sunday", "before", "after"), [
    (datetime(2026, 3, 6, 22, tzinfo=UTC), datetime(2026, 3, 8, 21, tzinfo=UTC), 2 * HOUR, 3 * HOUR),  # US spring
    (datetime(2026, 10, 30, 21, tzinfo=UTC), datetime(2026, 11, 1, 22, tzinfo=UTC), 3 * HOUR, 2 * HOUR),  # autumn
])
def test_a_new_york_close_server_switches_at_the_weekly_open(friday: datetime, sunday: datetime, before: int,
                                                             after: int) -> None:
    """The week closes Friday 24:00 and opens Monday 00:00 server time, whatever the season."""
    close, reopen = friday.timestamp(), sunday.timestamp()  # 17:00 New York both
    clock = Clock(close - 1)
    sim = terminal(quiet("icm-raw"), clock)
    last = sim.symbol_info_tick("EURUSD.raw")
    assert last.time == int(close) - 1 + before and datetime.fromtimestamp(last.time + 1, UTC).weekday() == 5
    clock.t = reopen - 5 * HOUR  # the weekend, past the US switch: the Friday tick stands, stamped as it was
    assert sim.symbol_info_tick("EURUSD.raw").time_msc == (int(close) + before) * 1000
    clock.t = reopen + 30 * 60
    first = sim.symbol_info_tick("EURUSD.raw")
    assert first.time == int(reopen) + 30 * 60 + after
    monday = datetime.fromtimestamp(first.time, UTC)
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 0, 30)


def test_daily_bars_of_a_new_york_close_server_span_new_york_trading_days() -> None:
    clock = Clock(datetime(2024, 3, 22, 18, tzinfo=UTC).timestamp())  # a Friday afternoon, after the US switch
    ny_close = terminal(quiet("icm-raw"), clock)
    utc = terminal(quiet("icm-raw", server_zone=UTC_ZONE), clock)
    days = ny_close.copy_rates_from_pos("EURUSD.raw", ny_close.TIMEFRAME_D1, 0, 15)
    assert all(bar.time % 86_400 == 0 for bar in days)
    assert {datetime.fromtimestamp(bar.time, UTC).weekday() for bar in days} == {0, 1, 2, 3, 4}  # Monday to Friday
    opens = [datetime.fromtimestamp(utc_s(ny_close, bar.time), sessions.NEW_YORK) for bar in days]
    assert {(o.hour, o.minute) for o in opens} == {(17, 0)}  # each starts at the rollover, winter and summer alike
    # On UTC a short Sunday evening bar exists: the week opens at 21:00 or 22:00 UTC on Sunday.
    utc_days = utc.copy_rates_from_pos("EURUSD.raw", utc.TIMEFRAME_D1, 0, 15)
    assert 6 in {datetime.fromtimestamp(bar.time, UTC).weekday() for bar in utc_days}


def test_order_expiration_is_server_time() -> None:
    clock = Clock()
    sim = terminal(quiet("icm-raw"), clock)
    ask = sim.symbol_info_tick("EURUSD.raw").ask
    request = {"action": sim.TRADE_ACTION_PENDING, "symbol": "EURUSD.raw", "volume": 0.1, "price": round(ask - 0.01, 5),
               "type": sim.ORDER_TYPE_BUY_LIMIT, "type_time": sim.ORDER_TIME_SPECIFIED}
    in_ten_minutes = server_s(sim, clock) + 600
    placed = sim.order_send({**request, "expiration": in_ten_minutes})
    assert placed.retcode == sim.TRADE_RETCODE_PLACED
    assert sim.orders_get()[0].time_expiration == in_ten_minutes  # as requested
    # Ten minutes ahead in UTC is two hours in the past on a GMT+2 server.
    assert sim.order_send({**request, "expiration": int(clock.t) + 600}).retcode == sim.TRADE_RETCODE_INVALID_EXPIRATION
    clock.t += 599
    assert sim.orders_total() == 1
    clock.t += 2
    assert sim.orders_total() == 0 and sim.history_orders_get(ticket=placed.order)[0].state == sim.ORDER_STATE_EXPIRED


# -- price history --------------------------------------------------------------------------


def test_rates_and_ticks_come_from_the_broker_quotes_and_skip_the_weekend() -> None:
    clock = Clock(datetime(2024, 3, 11, 0, 30, tzinfo=UTC).timestamp())  # Monday, after the weekend
    sim = terminal(quiet("exness-m"), clock)
    bars = sim.copy_rates_from_pos("EURUSD.m", sim.TIMEFRAME_H1, 0, 6)
    assert len(bars) == 6 and all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars)
    times = [b.time for b in bars]
    assert times == sorted(times) and times[0] < FRIDAY_CLOSE  # the weekend has no bars
    assert all(b.spread == sim.symbol_info("EURUSD.m").spread for b in bars)
    ticks = sim.copy_ticks_from("EURUSD.m", int(clock.t) - 10, 5, sim.COPY_TICKS_ALL)
    assert [t.time for t in ticks] == list(range(int(clock.t) - 10, int(clock.t) - 5))
    assert ticks[-1] == sim.copy_ticks_range("EURUSD.m", int(clock.t) - 6, int(clock.t) - 6, sim.COPY_TICKS_ALL)[0]
    assert sim.copy_rates_from_pos("EURUSD.m", 12345, 0, 1) is None
    assert sim.last_error()[0] == sim.RES_E_INVALID_PARAMS
    assert sim.market_book_add("EURUSD.m") and len(sim.market_book_get("EURUSD.m")) == 10
    assert sim.market_book_release("EURUSD.m") and sim.market_book_get("EURUSD.m") is None


# -- memory ---------------------------------------------------------------------------------


def test_memory_stays_bounded_over_a_simulated_week() -> None:
    clock = Clock(datetime(2024, 3, 4, tzinfo=UTC).timestamp())  # Monday
    sim = terminal(quiet("icm-raw"), clock)
    step_s, steps_per_day = 120, 720  # coarser than the agent's 1 s: the test stays fast

    def trade_day() -> None:
        for step in range(steps_per_day):
            clock.t += step_s
            sim.symbol_info_tick("EURUSD.raw")
            sim.account_info()
            sim.positions_get()
            if step % 180 == 0 and utc_s(sim, sim.symbol_info_tick("GBPUSD.raw").time) >= clock.t - 1:
                if sim.positions_total():
                    sim.Close("GBPUSD.raw")
                else:
                    market(sim, "GBPUSD.raw", sim.ORDER_TYPE_BUY, 0.1)

    trade_day()  # warm-up: caches fill to their bounds
    tracemalloc.start()
    gc.collect()  # also empties the interpreter's free lists: what remains is what the simulation keeps
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(6):
        trade_day()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(sim.history_deals_get(0, server_s(sim, clock))) > 5
    # A leak of even 100 bytes per call would be over 1 MB here; caches and history are far below.
    assert grown < 400_000, f"memory grew by {grown} bytes over a simulated week"
