"""From a checked command to MT5 trade requests, and from MT5's answer to an outcome.

Pure: requests are plain dicts with the real ``TradeRequest`` field names, ready for
``order_send``; positions, orders, deals and results are duck-typed like the MetaTrader5
package's named tuples (``TradePosition``, ``TradeOrder``, ``TradeDeal``,
``OrderSendResult``), so the simulated terminal and test fakes fit as they are.

Every request carries its command id as the comment and ``ids.magic_for(command_id)`` as
the magic number: that is how a restarted agent finds what it already did
(:func:`find_by_command`). Brokers may rewrite or cut comments, never the magic.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.proto.domain.ids import magic_for
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType

# MQL5's SYMBOL_FILLING_* flags of SymbolInfo.filling_mode (and SymbolSpec.filling_modes).
# The MetaTrader5 Python package does not export them, so they are not in mt5_constants.
SYMBOL_FILLING_FOK = 1
SYMBOL_FILLING_IOC = 2

DEFAULT_DEVIATION_POINTS = 20       # slippage allowed on a close when the command sets none
# A broker may cut the comment short (some keep fewer than MT5's 31 characters). A cut
# id still names one command if it keeps enough of it: 'mf1' + 9 base32 chars = 45 bits.
_MIN_COMMENT_PREFIX = 12
# Deals the broker made on its own (stop loss, take profit, stop-out) carry the position's
# magic but are not what the command did.
_BROKER_DEAL_REASONS = frozenset({mt5.DEAL_REASON_SL, mt5.DEAL_REASON_TP, mt5.DEAL_REASON_SO})

# Duck types: the MetaTrader5 named tuples or anything with the same field names.
TradePosition = Any
TradeOrder = Any
TradeDeal = Any
OrderSendResult = Any
Tick = Any

_MT5_ORDER_TYPE = {
    OrderType.BUY: mt5.ORDER_TYPE_BUY, OrderType.SELL: mt5.ORDER_TYPE_SELL,
    OrderType.BUY_LIMIT: mt5.ORDER_TYPE_BUY_LIMIT, OrderType.SELL_LIMIT: mt5.ORDER_TYPE_SELL_LIMIT,
    OrderType.BUY_STOP: mt5.ORDER_TYPE_BUY_STOP, OrderType.SELL_STOP: mt5.ORDER_TYPE_SELL_STOP,
}
_BUY_ORDER_TYPES = frozenset({mt5.ORDER_TYPE_BUY, mt5.ORDER_TYPE_BUY_LIMIT, mt5.ORDER_TYPE_BUY_STOP,
                              mt5.ORDER_TYPE_BUY_STOP_LIMIT})


# ------------------------------------------------------------------------------ filling


def filling_for(symbol_filling_mode_bitmask: int, execution_mode: int, *, pending: bool = False) -> int:
    """The ORDER_FILLING_* policy the symbol accepts, as MQL5's CTrade chooses it.

    Request and instant execution fill market orders fill-or-kill and keep pending orders
    (return). Market and exchange execution take what the symbol's flags allow, FOK
    first (all or nothing, never a surprise partial), then IOC, else return.
    """
    if execution_mode in (mt5.SYMBOL_TRADE_EXECUTION_REQUEST, mt5.SYMBOL_TRADE_EXECUTION_INSTANT):
        return mt5.ORDER_FILLING_RETURN if pending else mt5.ORDER_FILLING_FOK
    if symbol_filling_mode_bitmask & SYMBOL_FILLING_FOK:
        return mt5.ORDER_FILLING_FOK
    if symbol_filling_mode_bitmask & SYMBOL_FILLING_IOC:
        return mt5.ORDER_FILLING_IOC
    return mt5.ORDER_FILLING_RETURN


# ----------------------------------------------------------------------------- requests


def _request(**fields: Any) -> dict[str, Any]:
    """All 17 TradeRequest fields, MT5's zero values unless given: explicit for review."""
    base: dict[str, Any] = dict(
        action=0, magic=0, order=0, symbol="", volume=0.0, price=0.0, stoplimit=0.0, sl=0.0, tp=0.0, deviation=0,
        type=mt5.ORDER_TYPE_BUY, type_filling=mt5.ORDER_FILLING_FOK, type_time=mt5.ORDER_TIME_GTC, expiration=0,
        comment="", position=0, position_by=0)
    unknown = fields.keys() - base.keys()
    if unknown:
        raise ValueError(f"not TradeRequest fields: {sorted(unknown)}")
    return {**base, **fields}


def _level(price: float | None, digits: int) -> float:
    """SL/TP/price on the symbol's grid of digits; 0.0 is MT5's 'none'."""
    return 0.0 if price is None else round(price, digits)


def _tagged(command_id: str) -> dict[str, Any]:
    return dict(comment=command_id, magic=magic_for(command_id))


def open_request(cmd: Command, *, broker_symbol: str, tick_bid: float, tick_ask: float, spec: SymbolSpecInfo,
                 default_deviation: int, execution_mode: int = mt5.SYMBOL_TRADE_EXECUTION_MARKET) -> dict[str, Any]:
    """A market deal at today's ask (buy) or bid (sell), or a good-till-cancelled pending
    order at the command's entry."""
    if cmd.type is not CommandType.OPEN_POSITION:
        raise ValueError(f"open_request needs an OPEN_POSITION command, got {cmd.type.name}")
    pending = cmd.order_type.is_pending
    common = dict(symbol=broker_symbol, volume=cmd.lot_size, type=_MT5_ORDER_TYPE[cmd.order_type],
                  sl=_level(cmd.stop_loss, spec.digits), tp=_level(cmd.take_profit, spec.digits),
                  type_filling=filling_for(spec.filling_modes, execution_mode, pending=pending),
                  type_time=mt5.ORDER_TIME_GTC, **_tagged(cmd.command_id))
    if pending:
        if cmd.entry_price is None:
            raise ValueError(f"a {cmd.order_type.name} order needs an entry price")
        return _request(action=mt5.TRADE_ACTION_PENDING, price=_level(cmd.entry_price, spec.digits), **common)
    price = tick_ask if cmd.order_type.is_buy else tick_bid
    return _request(action=mt5.TRADE_ACTION_DEAL, price=_level(price, spec.digits),
                    deviation=cmd.max_deviation_points or default_deviation, **common)


def targets(cmd: Command, positions: Iterable[TradePosition]) -> list[TradePosition]:
    """The positions a CLOSE or MODIFY names: by ticket, else by the opening command's id."""
    if cmd.position_ticket is not None:
        return [p for p in positions if p.ticket == cmd.position_ticket]
    if cmd.target_command_id is not None:
        return [p for p in positions if belongs_to(p, cmd.target_command_id)]
    return []


def close_requests(cmd: Command, positions: Iterable[TradePosition], *, tick_bid: float, tick_ask: float,
                   hedging: bool, filling: int = mt5.ORDER_FILLING_FOK,
                   default_deviation: int = DEFAULT_DEVIATION_POINTS) -> list[dict[str, Any]]:
    """Opposite deals closing the target positions: ``cmd.lot_size`` lots in all (0: all
    of them), never more of a position than it holds. Empty when no position matches."""
    requests = []
    remaining = cmd.lot_size if cmd.lot_size > 0 else float("inf")
    for position in targets(cmd, positions):
        volume = round(min(remaining, position.volume), 8)
        if volume <= 0:
            break
        remaining -= volume
        price = tick_bid if position.type == mt5.POSITION_TYPE_BUY else tick_ask
        requests.append(_close(position, volume, price, hedging=hedging, filling=filling,
                               deviation=cmd.max_deviation_points or default_deviation, command_id=cmd.command_id))
    return requests


def _close(position: TradePosition, volume: float, price: float, *, hedging: bool, filling: int,
           deviation: int, command_id: str) -> dict[str, Any]:
    # Selling closes a buy at the bid; buying closes a sell at the ask.
    closing_type = mt5.ORDER_TYPE_SELL if position.type == mt5.POSITION_TYPE_BUY else mt5.ORDER_TYPE_BUY
    # A hedging account holds several positions per symbol: name the one to close. A
    # netting account holds one, which any opposite deal reduces.
    return _request(action=mt5.TRADE_ACTION_DEAL, symbol=position.symbol, volume=volume, type=closing_type,
                    price=price, deviation=deviation, type_filling=filling,
                    position=position.ticket if hedging else 0, **(_tagged(command_id) if command_id else {}))


def modify_request(cmd: Command, position_or_order: TradePosition | TradeOrder, *,
                   digits: int | None = None) -> dict[str, Any]:
    """New SL/TP of a position (TRADE_ACTION_SLTP) or of a pending order
    (TRADE_ACTION_MODIFY). A level the command leaves empty keeps its current value: a
    MODIFY that moves only the take profit never removes a protective stop loss."""
    target = position_or_order
    grid = (lambda p: p) if digits is None else (lambda p: round(p, digits))
    sl = grid(cmd.stop_loss) if cmd.stop_loss is not None else target.sl
    tp = grid(cmd.take_profit) if cmd.take_profit is not None else target.tp
    if not is_pending_order(target):
        return _request(action=mt5.TRADE_ACTION_SLTP, symbol=target.symbol, position=target.ticket, sl=sl, tp=tp,
                        **_tagged(cmd.command_id))
    # A pending order's price, expiry and kind travel again: MT5 replaces them all.
    # Only a command of a pending kind names a new entry; otherwise entry_price is a quote.
    new_entry = cmd.entry_price if cmd.order_type.is_pending else None
    price = target.price_open if new_entry is None else grid(new_entry)
    return _request(action=mt5.TRADE_ACTION_MODIFY, symbol=target.symbol, order=target.ticket, price=price,
                    stoplimit=target.price_stoplimit, sl=sl, tp=tp, type=target.type, type_time=target.type_time,
                    expiration=target.time_expiration, **_tagged(cmd.command_id))


def is_pending_order(item: TradePosition | TradeOrder) -> bool:
    """TradeOrder has a current (unfilled) volume; TradePosition has none."""
    return hasattr(item, "volume_current")


def close_all_requests(positions: Iterable[TradePosition], orders: Iterable[TradeOrder], *, symbol: str | None,
                       ticks: Mapping[str, Tick], hedging: bool = True, fillings: Mapping[str, int] | None = None,
                       deviation: int = DEFAULT_DEVIATION_POINTS, command_id: str = "") -> list[dict[str, Any]]:
    """Close every position and remove every pending order, of one broker symbol or all.

    ``ticks`` maps a broker symbol to its latest tick; a symbol without one is closed at
    the position's ``price_current`` rather than left open. ``fillings`` maps a broker
    symbol to its ORDER_FILLING_* (default FOK, MT5's own default).
    """
    fillings = fillings or {}
    requests = []
    for p in positions:
        if symbol is None or p.symbol == symbol:
            tick = ticks.get(p.symbol)
            price = p.price_current if tick is None else (tick.bid if p.type == mt5.POSITION_TYPE_BUY else tick.ask)
            requests.append(_close(p, p.volume, price, hedging=hedging, command_id=command_id, deviation=deviation,
                                   filling=fillings.get(p.symbol, mt5.ORDER_FILLING_FOK)))
    for o in orders:
        if symbol is None or o.symbol == symbol:
            tag = _tagged(command_id) if command_id else {}
            requests.append(_request(action=mt5.TRADE_ACTION_REMOVE, order=o.ticket, symbol=o.symbol, **tag))
    return requests


# ----------------------------------------------------------------------------- recovery


class FoundKind(enum.StrEnum):
    DEALS = "deals"          # filled: history deals made by the command
    ORDER = "order"          # placed: a pending order waiting in the terminal
    POSITION = "position"    # an open position it opened (history not searched or purged)


@dataclass(frozen=True, slots=True)
class Found:
    """What the terminal shows of a command the agent sent before a crash."""

    command_id: str
    kind: FoundKind
    symbol: str
    volume: float                 # lots filled (deals), waiting (order) or held (position)
    price: float                  # volume-weighted fill, order price, or position open price
    deal_ticket: int | None = None
    order_ticket: int | None = None
    position_ticket: int | None = None
    time_msc: int = 0             # when it was done, as MT5 reports it: trade-server time


def belongs_to(item: TradePosition | TradeOrder | TradeDeal, command_id: str) -> bool:
    """Made by this command: its magic, else its comment (whole, extended by the broker,
    or cut short but long enough to still name one command)."""
    if item.magic == magic_for(command_id):
        return True
    comment = item.comment or ""
    return comment.startswith(command_id) or (len(comment) >= _MIN_COMMENT_PREFIX and command_id.startswith(comment))


def find_by_command(command_id: str, positions: Iterable[TradePosition], orders: Iterable[TradeOrder],
                    deals: Iterable[TradeDeal]) -> Found | None:
    """The command's own trace, best evidence first: its deals, its pending order, its
    position. None: the command never reached the broker, so it is safe to send."""
    own_deals = [d for d in deals if belongs_to(d, command_id) and d.type in (mt5.DEAL_TYPE_BUY, mt5.DEAL_TYPE_SELL)
                 and d.reason not in _BROKER_DEAL_REASONS]
    if own_deals:
        volume = sum(d.volume for d in own_deals)
        price = sum(d.price * d.volume for d in own_deals) / volume if volume else own_deals[0].price
        first = own_deals[0]
        return Found(command_id, FoundKind.DEALS, first.symbol, volume, price, deal_ticket=first.ticket,
                     order_ticket=first.order or None, position_ticket=first.position_id or None,
                     time_msc=first.time_msc)
    order = next((o for o in orders if belongs_to(o, command_id)), None)
    if order is not None:
        return Found(command_id, FoundKind.ORDER, order.symbol, order.volume_current, order.price_open,
                     order_ticket=order.ticket, time_msc=order.time_setup_msc)
    position = next((p for p in positions if belongs_to(p, command_id)), None)
    if position is not None:
        return Found(command_id, FoundKind.POSITION, position.symbol, position.volume, position.price_open,
                     position_ticket=position.ticket, time_msc=position.time_msc)
    return None


# ------------------------------------------------------------------------------ results


class RetcodeClass(enum.StrEnum):
    DONE = "done"
    PARTIAL = "partial"
    PLACED = "placed"                # a pending order now waits in the book
    REQUOTE = "requote"              # the price moved: one retry at a fresh price is sound
    MARKET_CLOSED = "market_closed"  # never retried blindly: it stays closed for a while
    REJECTED = "rejected"

    @property
    def status(self) -> str:
        """The ExecutionReport status name: placing a pending order counts as FILLED."""
        return {RetcodeClass.DONE: "FILLED", RetcodeClass.PLACED: "FILLED",
                RetcodeClass.PARTIAL: "PARTIAL"}.get(self, "REJECTED")


_CLASSES = {
    mt5.TRADE_RETCODE_DONE: RetcodeClass.DONE,
    mt5.TRADE_RETCODE_DONE_PARTIAL: RetcodeClass.PARTIAL,
    mt5.TRADE_RETCODE_PLACED: RetcodeClass.PLACED,
    mt5.TRADE_RETCODE_REQUOTE: RetcodeClass.REQUOTE,
    mt5.TRADE_RETCODE_PRICE_CHANGED: RetcodeClass.REQUOTE,
    mt5.TRADE_RETCODE_PRICE_OFF: RetcodeClass.REQUOTE,
    mt5.TRADE_RETCODE_MARKET_CLOSED: RetcodeClass.MARKET_CLOSED,
}

_RETCODE_NAMES = {value: name for name, value in vars(mt5).items() if name.startswith("TRADE_RETCODE_")}
_RETCODE_WORDS = {
    mt5.TRADE_RETCODE_DONE: "done",
    mt5.TRADE_RETCODE_DONE_PARTIAL: "only part of the volume was filled",
    mt5.TRADE_RETCODE_PLACED: "pending order placed",
    mt5.TRADE_RETCODE_REQUOTE: "requote: the broker offered another price",
    mt5.TRADE_RETCODE_PRICE_CHANGED: "the price changed before execution",
    mt5.TRADE_RETCODE_PRICE_OFF: "the broker has no quote to fill at",
    mt5.TRADE_RETCODE_MARKET_CLOSED: "the market is closed for this symbol",
    mt5.TRADE_RETCODE_REJECT: "the broker rejected the request",
    mt5.TRADE_RETCODE_TIMEOUT: "the request timed out at the broker",
    mt5.TRADE_RETCODE_INVALID: "the broker found the request invalid",
    mt5.TRADE_RETCODE_INVALID_VOLUME: "invalid volume for the symbol's minimum, maximum or step",
    mt5.TRADE_RETCODE_INVALID_PRICE: "invalid price",
    mt5.TRADE_RETCODE_INVALID_STOPS: "invalid stops: SL or TP on the wrong side or inside the stops level",
    mt5.TRADE_RETCODE_TRADE_DISABLED: "trading is disabled for this symbol or account",
    mt5.TRADE_RETCODE_NO_MONEY: "not enough free margin",
    mt5.TRADE_RETCODE_TOO_MANY_REQUESTS: "too many requests",
    mt5.TRADE_RETCODE_NO_CHANGES: "no changes: the levels are already set",
    mt5.TRADE_RETCODE_CLIENT_DISABLES_AT: "algo trading is switched off in the terminal",
    mt5.TRADE_RETCODE_SERVER_DISABLES_AT: "algo trading is disabled by the broker",
    mt5.TRADE_RETCODE_FROZEN: "the order or position is frozen (inside the freeze level)",
    mt5.TRADE_RETCODE_INVALID_FILL: "the symbol does not support this filling mode",
    mt5.TRADE_RETCODE_CONNECTION: "the terminal has no connection to the trade server",
    mt5.TRADE_RETCODE_LIMIT_POSITIONS: "the broker's limit on open positions is reached",
    mt5.TRADE_RETCODE_POSITION_CLOSED: "the position is already closed",
    mt5.TRADE_RETCODE_INVALID_CLOSE_VOLUME: "the close volume exceeds the position",
    mt5.TRADE_RETCODE_CLOSE_ONLY: "the symbol is close-only at the broker",
}


def classify(retcode: int) -> RetcodeClass:
    return _CLASSES.get(retcode, RetcodeClass.REJECTED)


def retcode_reason(retcode: int) -> str:
    """Plain words and the MT5 name, e.g. 'not enough free margin (TRADE_RETCODE_NO_MONEY 10019)'."""
    name = _RETCODE_NAMES.get(retcode, "unknown retcode")
    return f"{_RETCODE_WORDS.get(retcode, 'refused by the broker')} ({name} {retcode})"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one order_send did, in the terms of an ExecutionReport."""

    status: str                          # FILLED, PARTIAL, REJECTED or FAILED
    retcode: int                         # 0 when the terminal gave no answer
    retcode_class: RetcodeClass | None   # None when the terminal gave no answer
    order_ticket: int | None
    deal_ticket: int | None
    position_ticket: int | None
    fill_price: float | None
    filled_volume: float
    slippage_points: float               # fill vs the adjusted entry; positive = worse for the trader
    slippage_reference_points: float     # fill vs the reference entry, same sign
    reason: str

    @classmethod
    def no_trade(cls, status: str, reason: str) -> Outcome:
        """An outcome where nothing reached (or was done by) the broker."""
        return cls(status=status, retcode=0, retcode_class=None, order_ticket=None, deal_ticket=None,
                   position_ticket=None, fill_price=None, filled_volume=0.0, slippage_points=0.0,
                   slippage_reference_points=0.0, reason=reason)

    @property
    def may_retry_at_fresh_price(self) -> bool:
        return self.retcode_class is RetcodeClass.REQUOTE


def outcome(cmd: Command, request: Mapping[str, Any], result: OrderSendResult | None,
            spec: SymbolSpecInfo | None, *, last_error: tuple[int, str] | None = None) -> Outcome:
    """``spec`` gives the point of the request's symbol; ``last_error`` is MT5's
    ``last_error()`` read right after a failed order_send, for the reason."""
    nothing = dict(order_ticket=None, deal_ticket=None, fill_price=None, filled_volume=0.0, slippage_points=0.0,
                   slippage_reference_points=0.0)
    if result is None:  # order_send returns None when the terminal IPC fails
        detail = f": {last_error[1]} ({last_error[0]})" if last_error else ""
        return Outcome(status="FAILED", retcode=0, retcode_class=None, position_ticket=None, **nothing,
                       reason=f"order_send gave no result, the terminal connection failed{detail}")
    kind = classify(result.retcode)
    reason = retcode_reason(result.retcode) + (f"; broker: {result.comment}" if result.comment else "")
    if kind.status == "REJECTED":
        return Outcome(status="REJECTED", retcode=result.retcode, retcode_class=kind,
                       position_ticket=request.get("position") or None, **nothing, reason=reason)
    is_deal = request.get("action") == mt5.TRADE_ACTION_DEAL
    fill = result.price if is_deal and result.price > 0 else None  # some brokers answer a fill with price 0
    point = spec.point if spec is not None and spec.point > 0 else None
    is_buy = request.get("type") in _BUY_ORDER_TYPES
    # An opening deal's position carries, as a rule, the ticket of the order that opened it.
    position = request.get("position") or (result.order if is_deal and cmd.type.opens else 0)
    return Outcome(
        status=kind.status, retcode=result.retcode, retcode_class=kind, order_ticket=result.order or None,
        deal_ticket=result.deal or None, position_ticket=position or None, fill_price=fill,
        filled_volume=result.volume if is_deal else 0.0,
        slippage_points=slippage_points(fill, adjusted_entry(cmd, request), point, is_buy=is_buy),
        slippage_reference_points=slippage_points(fill, reference_entry(cmd), point, is_buy=is_buy), reason=reason)


def adjusted_entry(cmd: Command, request: Mapping[str, Any]) -> float | None:
    """What ``slippage_points`` measures against: the command's adjusted entry (its
    ``entry_price``, the report's ``requested_price``), not the live price the agent sent,
    which has moved since the worker adjusted. A command without one (a close) measures
    against the price sent."""
    return cmd.entry_price or request.get("price") or None


def reference_entry(cmd: Command) -> float | None:
    """What ``slippage_reference_points`` measures against: the reference feed's entry
    (``original_entry``), else the reference bid/ask the signal saw."""
    return cmd.original_entry or cmd.reference_price or None


def slippage_points(fill: float | None, requested: float | None, point: float | None, *, is_buy: bool) -> float:
    """Signed slippage in points, positive when the trader got a worse price: paying more
    on a buy, receiving less on a sell. 0 when any figure is unknown."""
    if fill is None or requested is None or point is None:
        return 0.0
    worse = fill - requested if is_buy else requested - fill
    return round(worse / point, 3)
