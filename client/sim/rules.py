"""The trade server's rules, as pure functions: volumes, filling, stops, pending prices, triggers.

Distances follow MQL5's "Requirements and Limitations in Making Trades": SL/TP and pending
prices keep at least the stops level from the market (and never sit on it); orders and
SL/TP within the freeze level of the market cannot be changed.
"""

from __future__ import annotations

from mt5fleet.client.core.mt5_constants import (
    DEAL_REASON_SL,
    DEAL_REASON_TP,
    ORDER_FILLING_FOK,
    ORDER_FILLING_IOC,
    ORDER_FILLING_RETURN,
    ORDER_TIME_DAY,
    ORDER_TIME_GTC,
    ORDER_TIME_SPECIFIED,
    ORDER_TIME_SPECIFIED_DAY,
    ORDER_TYPE_BUY,
    ORDER_TYPE_BUY_LIMIT,
    ORDER_TYPE_BUY_STOP,
    ORDER_TYPE_BUY_STOP_LIMIT,
    ORDER_TYPE_SELL,
    ORDER_TYPE_SELL_LIMIT,
    ORDER_TYPE_SELL_STOP,
    ORDER_TYPE_SELL_STOP_LIMIT,
    SYMBOL_TRADE_EXECUTION_INSTANT,
    SYMBOL_TRADE_EXECUTION_MARKET,
    SYMBOL_TRADE_EXECUTION_REQUEST,
)
from mt5fleet.client.sim.broker import SYMBOL_FILLING_FOK, SYMBOL_FILLING_IOC, BrokerProfile
from mt5fleet.client.sim.market import Quote
from mt5fleet.client.sim.market_hours import next_rollover_ms

PENDING_TYPES = (ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_SELL_LIMIT, ORDER_TYPE_BUY_STOP, ORDER_TYPE_SELL_STOP,
                 ORDER_TYPE_BUY_STOP_LIMIT, ORDER_TYPE_SELL_STOP_LIMIT)
_BUY_TYPES = (ORDER_TYPE_BUY, ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_BUY_STOP, ORDER_TYPE_BUY_STOP_LIMIT)
_LIMIT_OF_STOP_LIMIT = {ORDER_TYPE_BUY_STOP_LIMIT: ORDER_TYPE_BUY_LIMIT,
                        ORDER_TYPE_SELL_STOP_LIMIT: ORDER_TYPE_SELL_LIMIT}
_VOLUME_EPS = 1e-9


def side_of(order_type: int) -> int:
    """ORDER_TYPE_BUY or ORDER_TYPE_SELL: the direction of the deal an order type makes."""
    return ORDER_TYPE_BUY if order_type in _BUY_TYPES else ORDER_TYPE_SELL


def close_price(side: int, quote: Quote) -> float:
    """A position on ``side`` is valued and closed at the bid (buy) or the ask (sell)."""
    return quote.bid if side == ORDER_TYPE_BUY else quote.ask


def open_price(side: int, quote: Quote) -> float:
    return quote.ask if side == ORDER_TYPE_BUY else quote.bid


def volume_ok(broker: BrokerProfile, volume: float) -> bool:
    if not broker.volume_min - _VOLUME_EPS <= volume <= broker.volume_max + _VOLUME_EPS:
        return False
    steps = volume / broker.volume_step
    return abs(steps - round(steps)) < 1e-6


def filling_ok(symbol_modes: int, execution_mode: int, type_filling: int, *, pending: bool) -> bool:
    """The filling policies MQL5 documents for ENUM_ORDER_TYPE_FILLING.

    Request and instant execution always fill market orders fill-or-kill and keep pending
    orders (return), whatever the request says. Market and exchange execution allow FOK
    and IOC as the symbol's flags say; return is refused for market orders under market
    execution and allowed otherwise.
    """
    if execution_mode in (SYMBOL_TRADE_EXECUTION_REQUEST, SYMBOL_TRADE_EXECUTION_INSTANT):
        return type_filling in (ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN)
    if type_filling == ORDER_FILLING_FOK:
        return bool(symbol_modes & SYMBOL_FILLING_FOK)
    if type_filling == ORDER_FILLING_IOC:
        return bool(symbol_modes & SYMBOL_FILLING_IOC)
    if type_filling == ORDER_FILLING_RETURN:
        return pending or execution_mode != SYMBOL_TRADE_EXECUTION_MARKET
    return False


def _far_enough(gap: float, distance: float, point: float) -> bool:
    return gap > point / 10 and gap >= distance - point / 10


def stops_ok(side: int, sl: float, tp: float, price: float, distance: float, point: float) -> bool:
    """SL/TP of a ``side`` position against ``price`` (its close price, or a pending order's entry)."""
    direction = 1.0 if side == ORDER_TYPE_BUY else -1.0
    sl_ok = not sl or _far_enough((price - sl) * direction, distance, point)
    tp_ok = not tp or _far_enough((tp - price) * direction, distance, point)
    return sl_ok and tp_ok


def pending_price_ok(order_type: int, price: float, stoplimit: float, quote: Quote, distance: float,
                     point: float) -> bool:
    """Limits below (buy) / above (sell) the market, stops above / below, at least ``distance`` away."""
    if price <= 0:
        return False
    gaps = {
        ORDER_TYPE_BUY_LIMIT: quote.ask - price, ORDER_TYPE_SELL_LIMIT: price - quote.bid,
        ORDER_TYPE_BUY_STOP: price - quote.ask, ORDER_TYPE_SELL_STOP: quote.bid - price,
        ORDER_TYPE_BUY_STOP_LIMIT: price - quote.ask, ORDER_TYPE_SELL_STOP_LIMIT: quote.bid - price,
    }
    if not _far_enough(gaps[order_type], distance, point):
        return False
    if order_type == ORDER_TYPE_BUY_STOP_LIMIT:
        return 0 < stoplimit < price
    if order_type == ORDER_TYPE_SELL_STOP_LIMIT:
        return stoplimit > price
    return True


def frozen(gap: float, freeze_distance: float) -> bool:
    """Within the freeze level of the market: no change allowed. A zero freeze level freezes nothing."""
    return freeze_distance > 0 and abs(gap) <= freeze_distance


def entry_price(order_type: int, price: float, stoplimit: float) -> float:
    """Where a pending order will open: its limit price for stop-limit orders."""
    return stoplimit if order_type in _LIMIT_OF_STOP_LIMIT else price


def expiry_msc(type_time: int, expiration_s: int, now_ms: int) -> int | None:
    """When a pending order expires (0: never); None for an invalid expiration."""
    if type_time == ORDER_TIME_GTC:
        return 0
    if type_time == ORDER_TIME_DAY:
        return next_rollover_ms(now_ms)
    if type_time == ORDER_TIME_SPECIFIED:
        return expiration_s * 1000 if expiration_s * 1000 > now_ms else None
    if type_time == ORDER_TIME_SPECIFIED_DAY:
        end = next_rollover_ms(expiration_s * 1000)
        return end if end > now_ms else None
    return None


def triggered(order_type: int, price: float, quote: Quote) -> bool:
    if order_type == ORDER_TYPE_BUY_LIMIT:
        return quote.ask <= price
    if order_type == ORDER_TYPE_SELL_LIMIT:
        return quote.bid >= price
    if order_type in (ORDER_TYPE_BUY_STOP, ORDER_TYPE_BUY_STOP_LIMIT):
        return quote.ask >= price
    return quote.bid <= price  # sell stop, sell stop limit


def limit_after_trigger(order_type: int) -> int | None:
    """A triggered stop-limit order becomes this limit order; other orders fill."""
    return _LIMIT_OF_STOP_LIMIT.get(order_type)


def pending_fill_price(order_type: int, price: float, quote: Quote) -> float:
    """Limits fill at their price or better (a gap through them), stops at the market."""
    if order_type == ORDER_TYPE_BUY_LIMIT:
        return min(price, quote.ask)
    if order_type == ORDER_TYPE_SELL_LIMIT:
        return max(price, quote.bid)
    return open_price(side_of(order_type), quote)


def stop_hit(side: int, sl: float, tp: float, quote: Quote) -> int | None:
    """DEAL_REASON_SL / DEAL_REASON_TP when the close price has reached a level, else None."""
    price = close_price(side, quote)
    direction = 1.0 if side == ORDER_TYPE_BUY else -1.0
    if sl and (price - sl) * direction <= 0:
        return DEAL_REASON_SL
    if tp and (tp - price) * direction <= 0:
        return DEAL_REASON_TP
    return None
