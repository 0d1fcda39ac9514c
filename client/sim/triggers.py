"""Moving the books forward in time: expiries, pending-order triggers, SL/TP hits and stop-out.

The terminal calls ``advance(now)`` before serving each API call, so the simulation needs
no thread and stays deterministic under an injected clock. Prices between two calls are
sampled on a fixed one-second grid (at most ``MAX_SAMPLES`` points, spread evenly over
longer gaps), so a level crossed and left again between calls is still seen, and the
sample times do not depend on when the calls happened within a second. When every level
is further from the prices at both ends of the gap than the market can plausibly move
in it (``REACH_SIGMAS`` standard deviations), only now is looked at: accelerated clocks
then cost one quote per symbol and call, not one per second of simulated time.
"""

from __future__ import annotations

from mt5fleet.client.core.mt5_constants import (
    DEAL_REASON_SL,
    DEAL_REASON_SO,
    DEAL_REASON_TP,
    ORDER_REASON_SL,
    ORDER_REASON_SO,
    ORDER_REASON_TP,
    ORDER_STATE_EXPIRED,
    ORDER_STATE_FILLED,
    ORDER_STATE_REJECTED,
)
from mt5fleet.client.sim import rules
from mt5fleet.client.sim.accounting import Accounting
from mt5fleet.client.sim.broker import BrokerProfile
from mt5fleet.client.sim.fills import Booker, Fill, opposite
from mt5fleet.client.sim.ledger import Ledger, PendingOrder, Position, filled_order
from mt5fleet.client.sim.market import BrokerMarket, Quote

SAMPLE_MS = 1000
MAX_SAMPLES = 64
REACH_SIGMAS = 8.0  # a random walk strays this far within a gap with a probability of about 1e-15
_ORDER_REASON = {DEAL_REASON_SL: ORDER_REASON_SL, DEAL_REASON_TP: ORDER_REASON_TP, DEAL_REASON_SO: ORDER_REASON_SO}
_COMMENT_TAG = {DEAL_REASON_SL: "sl", DEAL_REASON_TP: "tp"}


def sample_times(last_ms: int, now_ms: int) -> list[int]:
    """Times in (last, now] to look at prices: the whole seconds in between, and now."""
    first = (last_ms // SAMPLE_MS + 1) * SAMPLE_MS
    count = max(0, (now_ms - first) // SAMPLE_MS + 1)
    if count <= MAX_SAMPLES:
        times = [first + i * SAMPLE_MS for i in range(count)]
    else:
        span = now_ms - last_ms
        times = [last_ms + span * (i + 1) // (MAX_SAMPLES + 1) for i in range(MAX_SAMPLES)]
    if not times or times[-1] != now_ms:
        times.append(now_ms)
    return times


class Triggers:
    def __init__(self, broker: BrokerProfile, market: BrokerMarket, ledger: Ledger, accounting: Accounting,
                 booker: Booker) -> None:
        self._broker = broker
        self._market = market
        self._ledger = ledger
        self._accounting = accounting
        self._booker = booker
        self._last_ms: int | None = None

    def advance(self, now_ms: int) -> None:
        last = self._last_ms
        if last is not None and now_ms <= last:
            return  # the clock stood still or went back: nothing new happened
        self._last_ms = now_ms
        if self._ledger.orders or self._ledger.has_stop_levels():
            times = sample_times(last, now_ms) if last is not None else [now_ms]
            if len(times) > 2 and last is not None and not self._levels_in_reach(last, now_ms):
                times = [now_ms]
            for t_ms in times:
                self._step(t_ms)
        self._stop_out(now_ms)

    def _levels(self) -> dict[str, list[float]]:
        """The prices, per symbol, at which something happens: pending order prices, SL and TP."""
        levels: dict[str, list[float]] = {}
        for order in self._ledger.orders.values():
            levels.setdefault(order.symbol, []).append(order.price_open)
        for position in self._ledger.positions.values():
            levels.setdefault(position.symbol, []).extend(level for level in (position.sl, position.tp) if level)
        return levels

    def _levels_in_reach(self, last_ms: int, now_ms: int) -> bool:
        """Could the market have touched any level between the two times?"""
        for symbol, levels in self._levels().items():
            spec = self._market.spec(symbol)
            assert spec is not None
            for quote in (self._market.quote(spec, last_ms), self._market.quote(spec, now_ms)):
                reach = REACH_SIGMAS * self._market.typical_move(spec, quote.ask, now_ms - last_ms) + (
                    quote.ask - quote.bid)
                if any(min(abs(quote.bid - level), abs(quote.ask - level)) <= reach for level in levels):
                    return True
        return False

    def _step(self, t_ms: int) -> None:
        self._expire(t_ms)
        if not self._market.is_open(t_ms):
            return
        quotes: dict[str, Quote] = {}
        for order in sorted(self._ledger.orders.values(), key=lambda o: o.ticket):
            quote = quotes.get(order.symbol) or quotes.setdefault(order.symbol, self._quote(order.symbol, t_ms))
            if rules.triggered(order.type, order.price_open, quote):
                self._trigger(order, quote, t_ms)
        for position in sorted(self._ledger.positions.values(), key=lambda p: p.ticket):
            if not (position.sl or position.tp):
                continue
            quote = quotes.get(position.symbol) or quotes.setdefault(position.symbol,
                                                                     self._quote(position.symbol, t_ms))
            reason = rules.stop_hit(position.type, position.sl, position.tp, quote)
            if reason is not None:
                self._close(position, quote, t_ms, reason)

    def _quote(self, symbol: str, t_ms: int) -> Quote:
        spec = self._market.spec(symbol)
        assert spec is not None
        return self._market.quote(spec, t_ms)

    def _expire(self, t_ms: int) -> None:
        for order in [o for o in self._ledger.orders.values() if o.expires_msc and o.expires_msc <= t_ms]:
            self._archive(order, ORDER_STATE_EXPIRED, order.expires_msc, order.price_open)

    def _archive(self, order: PendingOrder, state: int, time_msc: int, price: float, position_id: int = 0) -> None:
        del self._ledger.orders[order.ticket]
        self._ledger.history_orders.append(order.record(price, state=state, time_done_msc=time_msc,
                                                        position_id=position_id))

    def _trigger(self, order: PendingOrder, quote: Quote, t_ms: int) -> None:
        limit_type = rules.limit_after_trigger(order.type)
        if limit_type is not None:  # a stop-limit's stop was reached: it becomes a limit order
            order.type, order.price_open, order.price_stoplimit = limit_type, order.price_stoplimit, 0.0
            return
        spec = self._market.spec(order.symbol)
        assert spec is not None
        side = rules.side_of(order.type)
        price = round(rules.pending_fill_price(order.type, order.price_open, quote), spec.digits)
        netted = None if self._broker.hedging else self._ledger.netting_position(spec.name)
        if netted is None or netted.type == side:
            added = self._accounting.margin(spec, order.volume, price, t_ms)
            if self._accounting.funds(t_ms, extra_margin=added).margin_free < 0:
                self._archive(order, ORDER_STATE_REJECTED, t_ms, price)
                return
        deal = self._booker.book(Fill(
            spec=spec, side=side, volume=order.volume, price=price, time_msc=t_ms, order=order.ticket,
            magic=order.magic, comment=order.comment, sl=order.sl, tp=order.tp,
        ))
        self._archive(order, ORDER_STATE_FILLED, t_ms, price, deal.position_id)

    def _close(self, position: Position, quote: Quote, t_ms: int, reason: int, comment: str = "") -> None:
        """Close a whole position at the market, as the server does for SL, TP and stop-out."""
        spec = self._accounting.spec_of(position)
        price = rules.close_price(position.type, quote)
        level = {DEAL_REASON_SL: position.sl, DEAL_REASON_TP: position.tp}.get(reason, 0.0)
        if reason in _COMMENT_TAG:  # what MT5 writes on such deals, e.g. "[sl 1.08250]"
            comment = f"[{_COMMENT_TAG[reason]} {level:.{spec.digits}f}]"
        ticket, side, volume = self._ledger.next_ticket(), opposite(position.type), position.volume
        self._booker.book(Fill(
            spec=spec, side=side, volume=volume, price=price, time_msc=t_ms, order=ticket, magic=position.magic,
            comment=comment, reason=reason, position=position.ticket,
        ))
        self._ledger.history_orders.append(filled_order(
            ticket=ticket, symbol=spec.name, order_type=side, volume=volume, price_requested=level or price,
            price_filled=price, time_msc=t_ms, magic=position.magic, comment=comment,
            position_id=position.ticket, reason=_ORDER_REASON[reason],
        ))

    def _stop_out(self, now_ms: int) -> None:
        """Below the stop-out margin level the server closes the worst position, until it is not."""
        for _ in range(len(self._ledger.positions)):
            funds = self._accounting.funds(now_ms)
            if not funds.margin or funds.margin_level >= self._broker.stop_out_level:
                return
            if not self._market.is_open(now_ms):
                return
            worst = min(self._ledger.positions.values(),
                        key=lambda p: (self._accounting.position_profit(p, now_ms), p.ticket))
            spec = self._accounting.spec_of(worst)
            self._close(worst, self._market.quote(spec, now_ms), now_ms, DEAL_REASON_SO,
                        comment=f"[so {funds.margin_level:.2f}%]")
