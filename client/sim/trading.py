"""order_check and order_send: the trade server's checks, then execution.

Each action has a check, shared by order_check and order_send, that returns a ``Verdict``
(retcode 0: would execute) and an executor. Only market deals use randomness (rejects,
requotes, slippage), always drawing the same number of values from the seeded RNG so a
simulation replays identically. Fills happen at the price of now + the broker's latency on
the injected clock; records carry the request time.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from mt5fleet.client.core.mt5_constants import (
    ORDER_REASON_EXPERT,
    ORDER_STATE_CANCELED,
    ORDER_TYPE_BUY,
    ORDER_TYPE_CLOSE_BY,
    ORDER_TYPE_SELL,
    SYMBOL_TRADE_EXECUTION_INSTANT,
    TRADE_ACTION_CLOSE_BY,
    TRADE_ACTION_DEAL,
    TRADE_ACTION_MODIFY,
    TRADE_ACTION_PENDING,
    TRADE_ACTION_REMOVE,
    TRADE_ACTION_SLTP,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_FROZEN,
    TRADE_RETCODE_INVALID,
    TRADE_RETCODE_INVALID_CLOSE_VOLUME,
    TRADE_RETCODE_INVALID_EXPIRATION,
    TRADE_RETCODE_INVALID_FILL,
    TRADE_RETCODE_INVALID_ORDER,
    TRADE_RETCODE_INVALID_PRICE,
    TRADE_RETCODE_INVALID_STOPS,
    TRADE_RETCODE_INVALID_VOLUME,
    TRADE_RETCODE_MARKET_CLOSED,
    TRADE_RETCODE_NO_CHANGES,
    TRADE_RETCODE_NO_MONEY,
    TRADE_RETCODE_PLACED,
    TRADE_RETCODE_POSITION_CLOSED,
    TRADE_RETCODE_REJECT,
    TRADE_RETCODE_REQUOTE,
)
from mt5fleet.client.sim import rules
from mt5fleet.client.sim.accounting import Accounting, funds_after
from mt5fleet.client.sim.broker import BrokerProfile
from mt5fleet.client.sim.fills import Booker, Fill, opposite
from mt5fleet.client.sim.ledger import Ledger, PendingOrder, Position, filled_order
from mt5fleet.client.sim.market import BrokerMarket, Quote, SymbolSpec
from mt5fleet.client.sim.records import OrderCheckResult, OrderSendResult, TradeRequest
from mt5fleet.client.sim.trade_requests import comment_for

# Share of random slippage that goes against the trader (brokers' slippage is asymmetric).
ADVERSE_SLIPPAGE_SHARE = 0.75
_VOLUME_EPS = 1e-9


@dataclass(frozen=True)
class Verdict:
    retcode: int  # 0: the request would execute
    spec: SymbolSpec | None = None
    position: Position | None = None
    order: PendingOrder | None = None
    other: Position | None = None  # close-by: the opposite position
    margin: float = 0.0  # margin the trade adds


class Trader:
    def __init__(self, broker: BrokerProfile, market: BrokerMarket, ledger: Ledger, accounting: Accounting,
                 booker: Booker, rng: random.Random) -> None:
        self._broker = broker
        self._market = market
        self._ledger = ledger
        self._accounting = accounting
        self._booker = booker
        self._rng = rng
        self._request_ids = itertools.count(1)
        self._checks: dict[int, Callable[[TradeRequest, int], Verdict]] = {
            TRADE_ACTION_DEAL: self._check_deal, TRADE_ACTION_PENDING: self._check_pending,
            TRADE_ACTION_SLTP: self._check_sltp, TRADE_ACTION_MODIFY: self._check_modify,
            TRADE_ACTION_REMOVE: self._check_remove, TRADE_ACTION_CLOSE_BY: self._check_close_by,
        }
        self._executors: dict[int, Callable[[TradeRequest, Verdict, int], OrderSendResult]] = {
            TRADE_ACTION_DEAL: self._execute_deal, TRADE_ACTION_PENDING: self._execute_pending,
            TRADE_ACTION_SLTP: self._execute_sltp, TRADE_ACTION_MODIFY: self._execute_modify,
            TRADE_ACTION_REMOVE: self._execute_remove, TRADE_ACTION_CLOSE_BY: self._execute_close_by,
        }

    # -- the two entry points -------------------------------------------------------------

    def check(self, request: TradeRequest, now_ms: int, *, refused: int = 0) -> OrderCheckResult:
        verdict = Verdict(refused) if refused else self._verdict(request, now_ms)
        now = self._accounting.funds(now_ms)
        if verdict.retcode:
            return OrderCheckResult(verdict.retcode, now.balance, now.equity, now.profit, 0.0, now.margin_free,
                                    now.margin_level, comment_for(verdict.retcode), request)
        after = funds_after(now.balance, now.profit, now.margin + verdict.margin)
        return OrderCheckResult(0, now.balance, now.equity, now.profit, round(verdict.margin, 2), after.margin_free,
                                after.margin_level, "Done", request)

    def send(self, request: TradeRequest, now_ms: int, *, refused: int = 0) -> OrderSendResult:
        verdict = Verdict(refused) if refused else self._verdict(request, now_ms)
        if verdict.retcode:
            return self._result(request, verdict.retcode)
        return self._executors[request.action](request, verdict, now_ms)

    def _verdict(self, request: TradeRequest, now_ms: int) -> Verdict:
        check = self._checks.get(request.action)
        return check(request, now_ms) if check else Verdict(TRADE_RETCODE_INVALID)

    def _result(self, request: TradeRequest, retcode: int, *, deal: int = 0, order: int = 0, volume: float = 0.0,
                price: float = 0.0, quote: Quote | None = None) -> OrderSendResult:
        return OrderSendResult(
            retcode=retcode, deal=deal, order=order, volume=volume, price=price,
            bid=quote.bid if quote else 0.0, ask=quote.ask if quote else 0.0, comment=comment_for(retcode),
            request_id=next(self._request_ids), retcode_external=0, request=request,
        )

    def _distance(self, spec: SymbolSpec) -> float:
        return self._broker.stops_level * spec.point

    def _open_market(self, request: TradeRequest, now_ms: int) -> tuple[SymbolSpec | None, int]:
        """The symbol of a request that opens something, or the retcode refusing it."""
        spec = self._market.spec(request.symbol)
        if spec is None:
            return None, TRADE_RETCODE_INVALID
        if not self._market.is_open(now_ms):
            return None, TRADE_RETCODE_MARKET_CLOSED
        if not rules.volume_ok(self._broker, request.volume):
            return None, TRADE_RETCODE_INVALID_VOLUME
        return spec, 0

    # -- market deals -----------------------------------------------------------------------

    def _deal_target(self, request: TradeRequest, spec: SymbolSpec) -> tuple[Position | None, int]:
        """The position a deal closes (hedging, named) or nets against (netting), or a refusal."""
        if self._broker.hedging:
            if not request.position:
                return None, 0
            position = self._ledger.positions.get(request.position)
            if position is None:
                return None, TRADE_RETCODE_POSITION_CLOSED
            if position.symbol != spec.name or position.type == request.type:
                return None, TRADE_RETCODE_INVALID
            if request.volume > position.volume + _VOLUME_EPS:
                return None, TRADE_RETCODE_INVALID_CLOSE_VOLUME
            return position, 0
        position = self._ledger.netting_position(spec.name)
        if request.position and (position is None or position.ticket != request.position):
            return None, TRADE_RETCODE_POSITION_CLOSED
        return position, 0

    def _check_deal(self, request: TradeRequest, now_ms: int) -> Verdict:
        if request.type not in (ORDER_TYPE_BUY, ORDER_TYPE_SELL):
            return Verdict(TRADE_RETCODE_INVALID_ORDER)
        spec, refusal = self._open_market(request, now_ms)
        if spec is None:
            return Verdict(refusal)
        if not rules.filling_ok(self._broker.filling_modes, self._broker.execution_mode, request.type_filling,
                                pending=False):
            return Verdict(TRADE_RETCODE_INVALID_FILL)
        if self._broker.execution_mode == SYMBOL_TRADE_EXECUTION_INSTANT and request.price <= 0:
            return Verdict(TRADE_RETCODE_INVALID_PRICE)
        position, refusal = self._deal_target(request, spec)
        if refusal:
            return Verdict(refusal)
        quote = self._market.quote(spec, now_ms)
        held = position.volume if position else 0.0
        adds = position is None or position.type == request.type
        # What stays open afterwards; a netting deal larger than the position reverses it.
        resulting = held + request.volume if adds else abs(held - request.volume)
        opens = adds or (not self._broker.hedging and request.volume > held + _VOLUME_EPS)
        close = rules.close_price(request.type, quote)
        if opens and not rules.stops_ok(request.type, request.sl, request.tp, close, self._distance(spec), spec.point):
            return Verdict(TRADE_RETCODE_INVALID_STOPS)
        mid = (quote.bid + quote.ask) / 2
        released = self._accounting.position_margin(position, now_ms) if position else 0.0
        added = self._accounting.margin(spec, resulting, mid, now_ms) - released
        if added > 0 and self._accounting.funds(now_ms, extra_margin=added).margin_free < 0:
            return Verdict(TRADE_RETCODE_NO_MONEY)
        return Verdict(0, spec=spec, position=position, margin=max(added, 0.0))

    def _slippage_points(self, happens: float, size: float, sign: float) -> int:
        if self._broker.slippage_max_points <= 0 or happens >= self._broker.slippage_probability:
            return 0
        points = 1 + int(size * self._broker.slippage_max_points)
        return points if sign < ADVERSE_SLIPPAGE_SHARE else -points

    def _execute_deal(self, request: TradeRequest, verdict: Verdict, now_ms: int) -> OrderSendResult:
        spec = verdict.spec
        assert spec is not None
        # Always five draws, whatever the outcome: the RNG stays in step between replays.
        reject, requote, happens, size, sign = (self._rng.random() for _ in range(5))
        quote = self._market.quote(spec, now_ms + self._broker.latency_ms)
        instant = self._broker.execution_mode == SYMBOL_TRADE_EXECUTION_INSTANT
        if reject < self._broker.reject_probability:
            return self._result(request, TRADE_RETCODE_REJECT, quote=quote)
        if instant and requote < self._broker.requote_probability:
            return self._result(request, TRADE_RETCODE_REQUOTE, quote=quote)
        adverse = 1 if request.type == ORDER_TYPE_BUY else -1
        slipped = self._slippage_points(happens, size, sign) * adverse * spec.point
        price = round(rules.open_price(request.type, quote) + slipped, spec.digits)
        if instant and abs(price - request.price) > request.deviation * spec.point + spec.point / 10:
            return self._result(request, TRADE_RETCODE_REQUOTE, quote=quote)
        ticket = self._ledger.next_ticket()
        closes = verdict.position.ticket if self._broker.hedging and verdict.position else 0
        deal = self._booker.book(Fill(
            spec=spec, side=request.type, volume=request.volume, price=price, time_msc=now_ms, order=ticket,
            magic=request.magic, comment=request.comment, sl=0.0 if closes else request.sl,
            tp=0.0 if closes else request.tp, position=closes,
        ))
        self._ledger.history_orders.append(filled_order(
            ticket=ticket, symbol=spec.name, order_type=request.type, volume=request.volume,
            price_requested=request.price, price_filled=price, time_msc=now_ms, magic=request.magic,
            comment=request.comment, position_id=deal.position_id, reason=ORDER_REASON_EXPERT,
            type_filling=request.type_filling, sl=request.sl, tp=request.tp,
        ))
        return self._result(request, TRADE_RETCODE_DONE, deal=deal.ticket, order=ticket, volume=request.volume,
                            price=price, quote=quote)

    # -- pending orders ---------------------------------------------------------------------

    def _expiry_msc(self, request: TradeRequest, now_ms: int) -> int | None:
        """When the order expires (UTC, 0: never); the request's expiration is in server time."""
        expiration = self._broker.server_zone.to_utc_s(request.expiration) if request.expiration else 0
        return rules.expiry_msc(request.type_time, expiration, now_ms)

    def _check_pending_prices(self, spec: SymbolSpec, order_type: int, request: TradeRequest,
                              now_ms: int) -> int:
        quote = self._market.quote(spec, now_ms)
        distance = self._distance(spec)
        if not rules.pending_price_ok(order_type, request.price, request.stoplimit, quote, distance, spec.point):
            return TRADE_RETCODE_INVALID_PRICE
        entry = rules.entry_price(order_type, request.price, request.stoplimit)
        if not rules.stops_ok(rules.side_of(order_type), request.sl, request.tp, entry, distance, spec.point):
            return TRADE_RETCODE_INVALID_STOPS
        if self._expiry_msc(request, now_ms) is None:
            return TRADE_RETCODE_INVALID_EXPIRATION
        return 0

    def _check_pending(self, request: TradeRequest, now_ms: int) -> Verdict:
        if request.type not in rules.PENDING_TYPES:
            return Verdict(TRADE_RETCODE_INVALID_ORDER)
        spec, refusal = self._open_market(request, now_ms)
        if spec is None:
            return Verdict(refusal)
        if not rules.filling_ok(self._broker.filling_modes, self._broker.execution_mode, request.type_filling,
                                pending=True):
            return Verdict(TRADE_RETCODE_INVALID_FILL)
        refusal = self._check_pending_prices(spec, request.type, request, now_ms)
        entry = rules.entry_price(request.type, request.price, request.stoplimit)
        # Margin is taken when the order fills; order_check still reports what it will need.
        margin = 0.0 if refusal else self._accounting.margin(spec, request.volume, entry, now_ms)
        return Verdict(refusal, spec=spec, margin=margin)

    def _execute_pending(self, request: TradeRequest, verdict: Verdict, now_ms: int) -> OrderSendResult:
        spec = verdict.spec
        assert spec is not None
        # The server keeps prices at the symbol's digits, whatever float arithmetic sent.
        price, stoplimit, sl, tp = (round(v, spec.digits) for v in (request.price, request.stoplimit, request.sl,
                                                                     request.tp))
        order = PendingOrder(
            ticket=self._ledger.next_ticket(), symbol=spec.name, type=request.type, volume=request.volume,
            price_open=price, price_stoplimit=stoplimit, sl=sl, tp=tp,
            magic=request.magic, comment=request.comment, time_setup_msc=now_ms, type_filling=request.type_filling,
            type_time=request.type_time, time_expiration=request.expiration,
            expires_msc=self._expiry_msc(request, now_ms) or 0,
        )
        self._ledger.orders[order.ticket] = order
        return self._result(request, TRADE_RETCODE_PLACED, order=order.ticket, volume=request.volume,
                            quote=self._market.quote(spec, now_ms))

    def _pending_target(self, request: TradeRequest, now_ms: int) -> Verdict:
        order = self._ledger.orders.get(request.order)
        if order is None:
            return Verdict(TRADE_RETCODE_INVALID)
        spec = self._market.spec(order.symbol)
        assert spec is not None
        if not self._market.is_open(now_ms):
            return Verdict(TRADE_RETCODE_MARKET_CLOSED)
        market = rules.open_price(rules.side_of(order.type), self._market.quote(spec, now_ms))
        if rules.frozen(order.price_open - market, self._broker.freeze_level * spec.point):
            return Verdict(TRADE_RETCODE_FROZEN)
        return Verdict(0, spec=spec, order=order)

    def _check_modify(self, request: TradeRequest, now_ms: int) -> Verdict:
        target = self._pending_target(request, now_ms)
        if target.retcode:
            return target
        order, spec = target.order, target.spec
        assert order is not None and spec is not None
        refusal = self._check_pending_prices(spec, order.type, request, now_ms)
        if refusal:
            return Verdict(refusal)
        prices = tuple(round(v, spec.digits) for v in (request.price, request.stoplimit, request.sl, request.tp))
        unchanged = (*prices, request.type_time, request.expiration) == (
            order.price_open, order.price_stoplimit, order.sl, order.tp, order.type_time, order.time_expiration)
        return Verdict(TRADE_RETCODE_NO_CHANGES) if unchanged else target

    def _execute_modify(self, request: TradeRequest, verdict: Verdict, now_ms: int) -> OrderSendResult:
        order, spec = verdict.order, verdict.spec
        assert order is not None and spec is not None
        order.price_open, order.price_stoplimit, order.sl, order.tp = (
            round(v, spec.digits) for v in (request.price, request.stoplimit, request.sl, request.tp))
        order.type_time, order.time_expiration = request.type_time, request.expiration
        order.expires_msc = self._expiry_msc(request, now_ms) or 0
        return self._result(request, TRADE_RETCODE_DONE, order=order.ticket, volume=order.volume)

    def _check_remove(self, request: TradeRequest, now_ms: int) -> Verdict:
        return self._pending_target(request, now_ms)

    def _execute_remove(self, request: TradeRequest, verdict: Verdict, now_ms: int) -> OrderSendResult:
        order = verdict.order
        assert order is not None
        del self._ledger.orders[order.ticket]
        self._ledger.history_orders.append(
            order.record(order.price_open, state=ORDER_STATE_CANCELED, time_done_msc=now_ms))
        return self._result(request, TRADE_RETCODE_DONE, order=order.ticket)

    # -- position changes -------------------------------------------------------------------

    def _check_sltp(self, request: TradeRequest, now_ms: int) -> Verdict:
        position = self._ledger.positions.get(request.position) if request.position else (
            None if self._broker.hedging else self._ledger.netting_position(request.symbol))
        if position is None or (request.symbol and request.symbol != position.symbol):
            return Verdict(TRADE_RETCODE_POSITION_CLOSED)
        spec = self._accounting.spec_of(position)
        if not self._market.is_open(now_ms):
            return Verdict(TRADE_RETCODE_MARKET_CLOSED)
        price = rules.close_price(position.type, self._market.quote(spec, now_ms))
        freeze = self._broker.freeze_level * spec.point
        if any(level and rules.frozen(price - level, freeze) for level in (position.sl, position.tp)):
            return Verdict(TRADE_RETCODE_FROZEN)
        if not rules.stops_ok(position.type, request.sl, request.tp, price, self._distance(spec), spec.point):
            return Verdict(TRADE_RETCODE_INVALID_STOPS)
        if (round(request.sl, spec.digits), round(request.tp, spec.digits)) == (position.sl, position.tp):
            return Verdict(TRADE_RETCODE_NO_CHANGES)
        return Verdict(0, spec=spec, position=position)

    def _execute_sltp(self, request: TradeRequest, verdict: Verdict, now_ms: int) -> OrderSendResult:
        position, spec = verdict.position, verdict.spec
        assert position is not None and spec is not None
        position.sl, position.tp = round(request.sl, spec.digits), round(request.tp, spec.digits)
        position.time_update_msc = now_ms
        return self._result(request, TRADE_RETCODE_DONE)

    def _check_close_by(self, request: TradeRequest, now_ms: int) -> Verdict:
        if not self._broker.hedging:
            return Verdict(TRADE_RETCODE_INVALID)
        position = self._ledger.positions.get(request.position)
        other = self._ledger.positions.get(request.position_by)
        if position is None or other is None:
            return Verdict(TRADE_RETCODE_POSITION_CLOSED)
        if position.symbol != other.symbol or position.type == other.type:
            return Verdict(TRADE_RETCODE_INVALID)
        if not self._market.is_open(now_ms):
            return Verdict(TRADE_RETCODE_MARKET_CLOSED)
        return Verdict(0, spec=self._accounting.spec_of(position), position=position, other=other)

    def _execute_close_by(self, request: TradeRequest, verdict: Verdict, now_ms: int) -> OrderSendResult:
        position, other, spec = verdict.position, verdict.other, verdict.spec
        assert position is not None and other is not None and spec is not None
        ticket, volume = self._ledger.next_ticket(), min(position.volume, other.volume)
        side = opposite(position.type)
        deal = self._booker.close_by(Fill(
            spec=spec, side=side, volume=volume, price=other.price_open, time_msc=now_ms, order=ticket,
            magic=request.magic, comment=request.comment,
        ), position, other)
        self._ledger.history_orders.append(filled_order(
            ticket=ticket, symbol=spec.name, order_type=ORDER_TYPE_CLOSE_BY, volume=volume, price_requested=0.0,
            price_filled=other.price_open, time_msc=now_ms, magic=request.magic, comment=request.comment,
            position_id=position.ticket, position_by_id=other.ticket, reason=ORDER_REASON_EXPERT,
        ))
        return self._result(request, TRADE_RETCODE_DONE, deal=deal.ticket, order=ticket, volume=volume)
