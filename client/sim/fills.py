"""Booking a fill: the deal it makes and what it does to positions and the balance.

Hedging accounts keep every position apart: a deal either opens a new position or closes
(part of) the one named in the request. Netting accounts keep one position per symbol: a
deal opens it, adds to it (average price), reduces or closes it, or reverses it
(DEAL_ENTRY_INOUT). Realised profit goes to the balance on the closing deal, as in MT5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mt5fleet.client.core.mt5_constants import (
    DEAL_ENTRY_IN,
    DEAL_ENTRY_INOUT,
    DEAL_ENTRY_OUT,
    DEAL_ENTRY_OUT_BY,
    DEAL_REASON_EXPERT,
    ORDER_TYPE_BUY,
    ORDER_TYPE_SELL,
)
from mt5fleet.client.sim.accounting import Accounting, money
from mt5fleet.client.sim.ledger import Ledger, Position
from mt5fleet.client.sim.market import SymbolSpec
from mt5fleet.client.sim.records import TradeDeal

VOLUME_DECIMALS = 8  # volumes are sums of steps; rounding keeps 0.1 + 0.2 equal to 0.3


@dataclass(frozen=True)
class Fill:
    spec: SymbolSpec
    side: int  # ORDER_TYPE_BUY or ORDER_TYPE_SELL: the deal's direction
    volume: float
    price: float
    time_msc: int
    order: int  # ticket of the order that made the deal
    magic: int
    comment: str
    reason: int = DEAL_REASON_EXPERT
    sl: float = 0.0
    tp: float = 0.0
    position: int = 0  # hedging: the position this deal closes; 0 opens a new one


def opposite(side: int) -> int:
    return ORDER_TYPE_SELL if side == ORDER_TYPE_BUY else ORDER_TYPE_BUY


class Booker:
    def __init__(self, ledger: Ledger, accounting: Accounting, *, hedging: bool) -> None:
        self._ledger = ledger
        self._accounting = accounting
        self._hedging = hedging

    def book(self, fill: Fill) -> TradeDeal:
        if self._hedging:
            if fill.position:
                return self._close_part(fill, self._ledger.positions[fill.position], fill.volume)
            return self._open(fill)
        position = self._ledger.netting_position(fill.spec.name)
        if position is None:
            return self._open(fill)
        if position.type == fill.side:
            return self._add(fill, position)
        if fill.volume <= position.volume:
            return self._close_part(fill, position, fill.volume)
        return self._reverse(fill, position)

    def _deal(self, fill: Fill, *, entry: int, position_id: int, profit: float = 0.0, volume: float | None = None,
              price: float | None = None) -> TradeDeal:
        self._ledger.balance = money(self._ledger.balance + profit)
        deal = TradeDeal(
            ticket=self._ledger.next_ticket(), order=fill.order, time=fill.time_msc // 1000, time_msc=fill.time_msc,
            type=fill.side, entry=entry, magic=fill.magic, position_id=position_id, reason=fill.reason,
            volume=fill.volume if volume is None else volume, price=fill.price if price is None else price,
            commission=0.0, swap=0.0, profit=profit, fee=0.0, symbol=fill.spec.name, comment=fill.comment,
            external_id="",
        )
        self._ledger.deals.append(deal)
        return deal

    def _open(self, fill: Fill) -> TradeDeal:
        self._ledger.positions[fill.order] = Position(
            ticket=fill.order, symbol=fill.spec.name, type=fill.side, volume=fill.volume, price_open=fill.price,
            sl=round(fill.sl, fill.spec.digits), tp=round(fill.tp, fill.spec.digits), magic=fill.magic,
            comment=fill.comment, time_msc=fill.time_msc, time_update_msc=fill.time_msc,
        )
        return self._deal(fill, entry=DEAL_ENTRY_IN, position_id=fill.order)

    def _add(self, fill: Fill, position: Position) -> TradeDeal:
        total = round(position.volume + fill.volume, VOLUME_DECIMALS)
        position.price_open = round((position.price_open * position.volume + fill.price * fill.volume) / total, 10)
        position.volume = total
        position.sl = round(fill.sl, fill.spec.digits) or position.sl
        position.tp = round(fill.tp, fill.spec.digits) or position.tp
        position.time_update_msc = fill.time_msc
        return self._deal(fill, entry=DEAL_ENTRY_IN, position_id=position.ticket)

    def _realise(self, position: Position, volume: float, price: float, t_ms: int) -> float:
        spec = self._accounting.spec_of(position)
        return self._accounting.profit(spec, position.type, volume, position.price_open, price, t_ms)

    def _close_part(self, fill: Fill, position: Position, volume: float) -> TradeDeal:
        profit = self._realise(position, volume, fill.price, fill.time_msc)
        position.volume = round(position.volume - volume, VOLUME_DECIMALS)
        position.time_update_msc = fill.time_msc
        if position.volume <= 0:
            del self._ledger.positions[position.ticket]
        return self._deal(fill, entry=DEAL_ENTRY_OUT, position_id=position.ticket, profit=profit, volume=volume)

    def _reverse(self, fill: Fill, position: Position) -> TradeDeal:
        """Netting: a deal larger than the opposite position closes it and opens the rest the other way."""
        profit = self._realise(position, position.volume, fill.price, fill.time_msc)
        position.type = fill.side
        position.volume = round(fill.volume - position.volume, VOLUME_DECIMALS)
        position.price_open = fill.price
        position.sl, position.tp = round(fill.sl, fill.spec.digits), round(fill.tp, fill.spec.digits)
        position.magic, position.comment = fill.magic, fill.comment
        position.time_update_msc = fill.time_msc
        return self._deal(fill, entry=DEAL_ENTRY_INOUT, position_id=position.ticket, profit=profit)

    def close_by(self, fill: Fill, position: Position, other: Position) -> TradeDeal:
        """Hedging close-by: each position closes at the other's open price, for the smaller volume."""
        volume = min(position.volume, other.volume)
        deal = None
        for closing, price in ((position, other.price_open), (other, position.price_open)):
            profit = self._realise(closing, volume, price, fill.time_msc)
            closing.volume = round(closing.volume - volume, VOLUME_DECIMALS)
            closing.time_update_msc = fill.time_msc
            if closing.volume <= 0:
                del self._ledger.positions[closing.ticket]
            made = self._deal(dataclasses.replace(fill, side=opposite(closing.type)), entry=DEAL_ENTRY_OUT_BY,
                              position_id=closing.ticket, profit=profit, volume=volume, price=price)
            deal = deal or made
        assert deal is not None
        return deal
