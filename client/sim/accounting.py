"""Money: profit, margin and the account's balance, equity and free margin, in the account currency.

Amounts in a symbol's profit (quote) currency are converted with the simulation's own
quotes (a USD account values USDJPY profit through USDJPY, EURGBP profit through GBPUSD).
Margin is ``volume * contract size * price / leverage`` converted the same way, which is
MT5's Forex formula (lots * contract / leverage in the base currency) expressed in the
quote currency. Hedged positions pay full margin on both legs: simpler than MT5's
"larger leg" options and on the safe side for risk checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.client.core.mt5_constants import (
    ACCOUNT_STOPOUT_MODE_PERCENT,
    ORDER_TYPE_BUY,
)
from mt5fleet.client.sim.broker import BrokerProfile
from mt5fleet.client.sim.ledger import Ledger, Position
from mt5fleet.client.sim.market import BrokerMarket, SymbolSpec
from mt5fleet.client.sim.records import AccountInfo

CURRENCY_DIGITS = 2
LIMIT_ORDERS = 200


@dataclass(frozen=True)
class Funds:
    balance: float
    profit: float
    equity: float
    margin: float
    margin_free: float
    margin_level: float  # percent; 0.0 without margin in use, as MT5 reports it


def money(amount: float) -> float:
    return round(amount, CURRENCY_DIGITS)


def funds_after(balance: float, profit: float, margin: float) -> Funds:
    equity = money(balance + profit)
    return Funds(balance=money(balance), profit=money(profit), equity=equity, margin=money(margin),
                 margin_free=money(equity - margin), margin_level=round(equity / margin * 100, 2) if margin else 0.0)


class Accounting:
    def __init__(self, broker: BrokerProfile, market: BrokerMarket, ledger: Ledger) -> None:
        self._broker = broker
        self._market = market
        self._ledger = ledger

    def to_account(self, amount: float, currency: str, t_ms: int) -> float:
        return amount * self._market.rate(currency, self._broker.currency, t_ms)

    def profit(self, spec: SymbolSpec, side: int, volume: float, price_open: float, price_close: float,
               t_ms: int) -> float:
        """Profit of a BUY (``side`` ORDER_TYPE_BUY) or SELL from open to close, in the account currency."""
        direction = 1.0 if side == ORDER_TYPE_BUY else -1.0
        raw = (price_close - price_open) * direction * volume * spec.contract_size
        return money(self.to_account(raw, spec.quote, t_ms))

    def margin(self, spec: SymbolSpec, volume: float, price: float, t_ms: int) -> float:
        raw = volume * spec.contract_size * price / self._broker.leverage
        return money(self.to_account(raw, spec.quote, t_ms))

    def tick_value(self, spec: SymbolSpec, t_ms: int) -> float:
        """One tick of one lot in the account currency (SymbolInfo.trade_tick_value)."""
        return round(self.to_account(spec.point * spec.contract_size, spec.quote, t_ms), 8)

    def spec_of(self, position: Position) -> SymbolSpec:
        spec = self._market.spec(position.symbol)
        assert spec is not None, "positions only exist on the broker's symbols"
        return spec

    def close_price(self, position: Position, t_ms: int) -> float:
        """What closing the position would get now: the bid for a buy, the ask for a sell."""
        quote = self._market.quote(self.spec_of(position), t_ms)
        return quote.bid if position.type == ORDER_TYPE_BUY else quote.ask

    def position_profit(self, position: Position, t_ms: int) -> float:
        return self.profit(self.spec_of(position), position.type, position.volume, position.price_open,
                           self.close_price(position, t_ms), t_ms)

    def position_margin(self, position: Position, t_ms: int) -> float:
        spec = self.spec_of(position)
        quote = self._market.quote(spec, t_ms)
        return self.margin(spec, position.volume, (quote.bid + quote.ask) / 2, t_ms)

    def used_margin(self, t_ms: int, *, without: Position | None = None) -> float:
        return sum(self.position_margin(p, t_ms) for p in self._ledger.positions.values() if p is not without)

    def funds(self, t_ms: int, *, extra_margin: float = 0.0, without: Position | None = None) -> Funds:
        """The account now; with ``extra_margin``/``without``: as it would be after a trade."""
        profit = sum(self.position_profit(p, t_ms) for p in self._ledger.positions.values())
        return funds_after(self._ledger.balance, profit, self.used_margin(t_ms, without=without) + extra_margin)

    def account_info(self, t_ms: int, *, trade_allowed: bool) -> AccountInfo:
        broker, funds = self._broker, self.funds(t_ms)
        return AccountInfo(
            login=broker.login, trade_mode=broker.trade_mode, leverage=broker.leverage, limit_orders=LIMIT_ORDERS,
            margin_so_mode=ACCOUNT_STOPOUT_MODE_PERCENT, trade_allowed=True, trade_expert=trade_allowed,
            margin_mode=broker.margin_mode, currency_digits=CURRENCY_DIGITS, fifo_close=False,
            balance=funds.balance, credit=0.0, profit=funds.profit, equity=funds.equity, margin=funds.margin,
            margin_free=funds.margin_free, margin_level=funds.margin_level, margin_so_call=broker.margin_call_level,
            margin_so_so=broker.stop_out_level, margin_initial=0.0, margin_maintenance=0.0, assets=0.0,
            liabilities=0.0, commission_blocked=0.0, name=broker.account_name, server=broker.server,
            currency=broker.currency, company=broker.company,
        )
