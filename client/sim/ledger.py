"""The account's books: open positions, active pending orders, and the order and deal history.

Positions and pending orders change, so they are small mutable dataclasses turned into the
real record types on every read. History entries never change once written and are kept
as records. History is the only thing that grows, and only with trading.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

from mt5fleet.client.core.mt5_constants import (
    DEAL_ENTRY_IN,
    DEAL_REASON_CLIENT,
    DEAL_TYPE_BALANCE,
    ORDER_REASON_EXPERT,
    ORDER_STATE_FILLED,
    ORDER_STATE_PLACED,
    ORDER_TIME_GTC,
    POSITION_REASON_EXPERT,
)
from mt5fleet.client.sim.records import TradeDeal, TradeOrder, TradePosition

FIRST_TICKET = 50_000_001
History = TypeVar("History", TradeOrder, TradeDeal)


@dataclass
class Position:
    ticket: int  # also the position identifier: the ticket of the order that opened it
    symbol: str
    type: int  # POSITION_TYPE_BUY / POSITION_TYPE_SELL
    volume: float
    price_open: float
    sl: float
    tp: float
    magic: int
    comment: str
    time_msc: int
    time_update_msc: int
    reason: int = POSITION_REASON_EXPERT

    def record(self, price_current: float, profit: float) -> TradePosition:
        return TradePosition(
            ticket=self.ticket, time=self.time_msc // 1000, time_msc=self.time_msc,
            time_update=self.time_update_msc // 1000, time_update_msc=self.time_update_msc, type=self.type,
            magic=self.magic, identifier=self.ticket, reason=self.reason, volume=self.volume,
            price_open=self.price_open, sl=self.sl, tp=self.tp, price_current=price_current, swap=0.0,
            profit=profit, symbol=self.symbol, comment=self.comment, external_id="",
        )


@dataclass
class PendingOrder:
    ticket: int
    symbol: str
    type: int  # ORDER_TYPE_BUY_LIMIT .. ORDER_TYPE_SELL_STOP_LIMIT
    volume: float
    price_open: float
    price_stoplimit: float
    sl: float
    tp: float
    magic: int
    comment: str
    time_setup_msc: int
    type_filling: int
    type_time: int = ORDER_TIME_GTC
    time_expiration: int = 0  # as requested, unix seconds
    expires_msc: int = 0  # when the simulation expires it; 0: never

    def record(self, price_current: float, *, state: int = ORDER_STATE_PLACED, time_done_msc: int = 0,
               position_id: int = 0) -> TradeOrder:
        done = state != ORDER_STATE_PLACED
        return TradeOrder(
            ticket=self.ticket, time_setup=self.time_setup_msc // 1000, time_setup_msc=self.time_setup_msc,
            time_done=time_done_msc // 1000, time_done_msc=time_done_msc, time_expiration=self.time_expiration,
            type=self.type, type_time=self.type_time, type_filling=self.type_filling, state=state,
            magic=self.magic, position_id=position_id, position_by_id=0, reason=ORDER_REASON_EXPERT,
            volume_initial=self.volume, volume_current=self.volume if not done else 0.0,
            price_open=self.price_open, sl=self.sl, tp=self.tp, price_current=price_current,
            price_stoplimit=self.price_stoplimit, symbol=self.symbol, comment=self.comment, external_id="",
        )


def group_match(symbol: str, group: str) -> bool:
    """MT5 group filter: comma-separated wildcards, '!' excludes ("*USD*,!EUR*")."""
    included = False
    for pattern in (p.strip() for p in group.split(",")):
        if pattern.startswith("!"):
            if fnmatchcase(symbol, pattern[1:]):
                return False
        elif pattern and fnmatchcase(symbol, pattern):
            included = True
    return included


class Ledger:
    def __init__(self) -> None:
        self.balance = 0.0
        self.positions: dict[int, Position] = {}
        self.orders: dict[int, PendingOrder] = {}
        self.history_orders: list[TradeOrder] = []
        self.deals: list[TradeDeal] = []
        # One sequence for orders and deals: a ticket names exactly one thing.
        self._tickets = itertools.count(FIRST_TICKET)

    def next_ticket(self) -> int:
        return next(self._tickets)

    def deposit(self, amount: float, time_msc: int, comment: str = "Deposit") -> None:
        """A balance deal, as the history of every real account starts with one."""
        self.balance = round(self.balance + amount, 2)
        self.deals.append(TradeDeal(
            ticket=self.next_ticket(), order=0, time=time_msc // 1000, time_msc=time_msc, type=DEAL_TYPE_BALANCE,
            entry=DEAL_ENTRY_IN, magic=0, position_id=0, reason=DEAL_REASON_CLIENT, volume=0.0, price=0.0,
            commission=0.0, swap=0.0, profit=amount, fee=0.0, symbol="", comment=comment, external_id="",
        ))

    def netting_position(self, symbol: str) -> Position | None:
        return next((p for p in self.positions.values() if p.symbol == symbol), None)

    def has_stop_levels(self) -> bool:
        return any(p.sl or p.tp for p in self.positions.values())

    def select_positions(self, *, symbol: str | None, ticket: int | None, group: str | None) -> Iterator[Position]:
        return (p for p in self.positions.values() if _selected(p.symbol, p.ticket, symbol, ticket, group))

    def select_orders(self, *, symbol: str | None, ticket: int | None, group: str | None) -> Iterator[PendingOrder]:
        return (o for o in self.orders.values() if _selected(o.symbol, o.ticket, symbol, ticket, group))

    def select_history_orders(self, *, since: float | None = None, until: float | None = None,
                              group: str | None = None, position: int | None = None,
                              ticket: int | None = None) -> tuple[TradeOrder, ...]:
        return _select_history(self.history_orders, lambda o: o.time_setup, since, until, group, position, ticket)

    def select_deals(self, *, since: float | None = None, until: float | None = None, group: str | None = None,
                     position: int | None = None, ticket: int | None = None) -> tuple[TradeDeal, ...]:
        return _select_history(self.deals, lambda d: d.time, since, until, group, position, ticket)


def _selected(item_symbol: str, item_ticket: int, symbol: str | None, ticket: int | None, group: str | None) -> bool:
    if symbol is not None and item_symbol != symbol:
        return False
    if ticket is not None and item_ticket != ticket:
        return False
    return group is None or group_match(item_symbol, group)


def _select_history(items: Iterable[History], time_of: Callable[[History], int], since: float | None,
                    until: float | None, group: str | None, position: int | None,
                    ticket: int | None) -> tuple[History, ...]:
    """History by ticket, or by position id, or by time range [since, until] (seconds) and group."""
    if ticket is not None:
        return tuple(i for i in items if i.ticket == ticket)
    if position is not None:
        return tuple(i for i in items if i.position_id == position)
    return tuple(
        i for i in items
        if since is not None and until is not None and since <= time_of(i) <= until
        and (group is None or group_match(i.symbol, group))
    )


def filled_order(*, ticket: int, symbol: str, order_type: int, volume: float, price_requested: float,
                 price_filled: float, time_msc: int, magic: int, comment: str, position_id: int, reason: int,
                 type_filling: int = 0, sl: float = 0.0, tp: float = 0.0, position_by_id: int = 0) -> TradeOrder:
    """The history record of an order executed at once: market orders, SL/TP and stop-out closes."""
    return TradeOrder(
        ticket=ticket, time_setup=time_msc // 1000, time_setup_msc=time_msc, time_done=time_msc // 1000,
        time_done_msc=time_msc, time_expiration=0, type=order_type, type_time=ORDER_TIME_GTC,
        type_filling=type_filling, state=ORDER_STATE_FILLED, magic=magic, position_id=position_id,
        position_by_id=position_by_id, reason=reason, volume_initial=volume, volume_current=0.0,
        price_open=price_requested, sl=sl, tp=tp, price_current=price_filled, price_stoplimit=0.0, symbol=symbol,
        comment=comment, external_id="",
    )
