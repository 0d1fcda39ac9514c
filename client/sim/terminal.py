"""A simulated MetaTrader 5 terminal with the real ``MetaTrader5`` package's interface.

``SimulatedMetaTrader5`` is used exactly like the module: ``api.initialize()``,
``api.symbol_info_tick("EURUSD.m")``, ``api.order_send({...})``, ``api.last_error()``,
``api.TRADE_RETCODE_DONE``. It is an instance, so one process can run one simulated
terminal per user. Every call first brings the simulation up to the injected clock
(pending orders, SL/TP, expiries, stop-out), so a seed and a clock replay it exactly.

Test hooks beyond the real API: ``fail_ipc``/``restore_ipc`` (the IPC link, see ipc.py),
``set_trade_allowed`` (the Algo Trading button), ``set_tradeapi_disabled`` (the option
refusing Python trading) and ``set_server_connected`` (the link to the broker).

Times are the broker's trade-server time, as the real package reports them (see
server_clock): the simulation runs on UTC inside and converts at this edge only.

Known differences from the real package: copy_rates_*/copy_ticks_* return tuples of
records, not numpy arrays; no swaps, commissions or partial fills; ticks once a second;
all symbols start in Market Watch and quote whether selected or not. The models are
described in market, accounting, trading, triggers and price_history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from mt5fleet.client.core import mt5_constants
from mt5fleet.client.core.mt5_constants import (
    ORDER_TYPE_BUY,
    ORDER_TYPE_SELL,
    RES_E_AUTH_FAILED,
    RES_E_AUTO_TRADING_DISABLED,
    RES_E_INTERNAL_FAIL_CONNECT,
    RES_E_INVALID_PARAMS,
    RES_E_NOT_FOUND,
    TRADE_RETCODE_CLIENT_DISABLES_AT,
    TRADE_RETCODE_CONNECTION,
)
from mt5fleet.client.sim import helpers, records, rules, server_clock
from mt5fleet.client.sim.accounting import Accounting
from mt5fleet.client.sim.api_calls import (
    CallRefused,
    count_arg,
    group_arg,
    install_constants,
    no_unnamed,
    number_arg,
    seconds_arg,
    side_arg,
    terminal_call,
    timeframe_arg,
)
from mt5fleet.client.sim.broker import BrokerProfile
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.fills import Booker
from mt5fleet.client.sim.ipc import IpcLink
from mt5fleet.client.sim.ledger import Ledger, Position, group_match
from mt5fleet.client.sim.market import BrokerMarket, SymbolSpec
from mt5fleet.client.sim.price_history import MAX_TICKS, PriceHistory
from mt5fleet.client.sim.symbol_records import symbol_info_record, tick_record
from mt5fleet.client.sim.trade_requests import InvalidArgument, parse_request
from mt5fleet.client.sim.trading import Trader
from mt5fleet.client.sim.triggers import Triggers

BUILD = 4755
BUILD_DATE = "13 Dec 2024"
MAX_BARS = 100_000


class SimulatedMetaTrader5:
    """One simulated terminal logged in to one ``BrokerProfile`` account, priced from a ``ReferenceFeed``."""

    __version__ = "5.0.6231"
    __author__ = "MetaQuotes Ltd."

    def __init__(self, broker: BrokerProfile, feed: ReferenceFeed, *, clock: Callable[[], float] = time.time,
                 seed: int = 0) -> None:
        self.broker = broker
        self.feed = feed
        self._clock = clock
        self._now_ms = int(clock() * 1000)
        self._link = IpcLink()
        self._market = BrokerMarket(broker, feed)
        self._ledger = Ledger()
        self._ledger.deposit(broker.balance, self._now_ms)
        self._accounting = Accounting(broker, self._market, self._ledger)
        booker = Booker(self._ledger, self._accounting, hedging=broker.hedging)
        self._trader = Trader(broker, self._market, self._ledger, self._accounting, booker, random.Random(seed))
        self._triggers = Triggers(broker, self._market, self._ledger, self._accounting, booker)
        self._zone = broker.server_zone
        self._history = PriceHistory(self._market, self._zone)
        self._selected = set(self._market.names)
        self._books: set[str] = set()
        self._path = rf"C:\Program Files\{broker.company} MetaTrader 5"
        self._trade_allowed = True
        self._tradeapi_disabled = False
        self._server_down_since_ms: int | None = None

    # -- failure injection and terminal settings (not part of the real API) ------------------

    def fail_ipc(self, code: int = RES_E_INTERNAL_FAIL_CONNECT, *, calls: int | None = None) -> None:
        """Break the IPC link: for good (until ``restore_ipc()`` and ``initialize()``) or for ``calls`` calls."""
        self._link.fail(code, calls)

    def restore_ipc(self) -> None:
        """The terminal is back: ``initialize()`` can connect again."""
        self._link.restore()

    def set_trade_allowed(self, allowed: bool) -> None:
        """The terminal's Algo Trading button: when off, trade requests get TRADE_RETCODE_CLIENT_DISABLES_AT."""
        self._trade_allowed = allowed

    def set_tradeapi_disabled(self, disabled: bool) -> None:
        """The option refusing trades from Python: order_send/check return None, RES_E_AUTO_TRADING_DISABLED."""
        self._tradeapi_disabled = disabled

    def set_server_connected(self, connected: bool) -> None:
        """The terminal's link to the broker: while down, quotes stand still and trades get TRADE_RETCODE_CONNECTION."""
        if connected:
            self._server_down_since_ms = None
        elif self._server_down_since_ms is None:
            self._server_down_since_ms = int(self._clock() * 1000)

    # -- internals ------------------------------------------------------------------------

    def _begin_call(self) -> bool:
        """May the call reach the terminal? Then bring the simulation up to the clock first."""
        if not self._link.admit():
            return False
        self._now_ms = int(self._clock() * 1000)
        self._triggers.advance(self._now_ms)
        self._link.set_error(mt5_constants.RES_S_OK)
        return True

    def _refuse(self, code: int, text: str | None) -> None:
        self._link.set_error(code, text)

    def _price_ms(self) -> int:
        """Quotes reach the terminal only while it is connected to the broker."""
        down = self._server_down_since_ms
        return self._now_ms if down is None else min(down, self._now_ms)

    def _spec(self, symbol: object) -> SymbolSpec:
        if not isinstance(symbol, str):
            raise CallRefused(RES_E_INVALID_PARAMS, "Invalid 1st unnamed argument")
        spec = self._market.spec(symbol)
        if spec is None:
            raise CallRefused(RES_E_NOT_FOUND)
        return spec

    def _symbol_info(self, spec: SymbolSpec) -> records.SymbolInfo:
        t_ms = self._price_ms()
        quote = server_clock.quote(self._zone, self._market.quote(spec, t_ms))
        return symbol_info_record(spec, quote, self.broker, selected=spec.name in self._selected,
                                  tick_value=self._accounting.tick_value(spec, t_ms))

    def _position_record(self, position: Position) -> records.TradePosition:
        t_ms = self._price_ms()
        return server_clock.position(self._zone, position.record(self._accounting.close_price(position, t_ms),
                                                                 self._accounting.position_profit(position, t_ms)))

    # -- connection -----------------------------------------------------------------------

    def initialize(self, path: str | None = None, *, login: int | None = None, password: str | None = None,
                   server: str | None = None, timeout: int | None = None, portable: bool = False) -> bool:
        if login is not None and (not isinstance(login, int) or isinstance(login, bool)):
            self._link.set_error(RES_E_INVALID_PARAMS, 'Invalid "login" argument')
            return False
        if not self._link.open():
            return False
        if path is not None:
            self._path = path
        if not self._credentials_match(login, password, server):
            self._link.connected = False
            self._link.set_error(RES_E_AUTH_FAILED)
            return False
        self._link.connected = True
        self._link.set_error(mt5_constants.RES_S_OK)
        return True

    def _credentials_match(self, login: int | None, password: str | None, server: str | None) -> bool:
        return ((login is None or login == self.broker.login) and (password is None or password == self.broker.password)
                and (server is None or server == self.broker.server))

    @terminal_call
    def login(self, login: int, password: str | None = None, server: str | None = None,
              timeout: int | None = None) -> bool:
        if not self._credentials_match(login, password, server):
            raise CallRefused(RES_E_AUTH_FAILED)
        return True

    def shutdown(self) -> None:
        self._link.connected = False

    def last_error(self) -> tuple[int, str]:
        return self._link.error

    @terminal_call
    def version(self) -> tuple[int, int, str]:
        return 500, BUILD, BUILD_DATE

    @terminal_call
    def terminal_info(self) -> records.TerminalInfo:
        return records.TerminalInfo(
            community_account=False, community_connection=False, connected=self._server_down_since_ms is None,
            dlls_allowed=False, trade_allowed=self._trade_allowed, tradeapi_disabled=self._tradeapi_disabled,
            email_enabled=False, ftp_enabled=False, notifications_enabled=False, mqid=False, build=BUILD,
            maxbars=MAX_BARS, codepage=0, ping_last=self.broker.latency_ms * 1000, community_balance=0.0,
            retransmission=0.0, company=self.broker.company, name="MetaTrader 5", language="English",
            path=self._path, data_path=self._path, commondata_path=r"C:\ProgramData\MetaQuotes\Terminal\Common",
        )

    @terminal_call
    def account_info(self) -> records.AccountInfo:
        return self._accounting.account_info(self._price_ms(), trade_allowed=self._trade_allowed)

    # -- symbols and market data -------------------------------------------------------------

    @terminal_call
    def symbols_total(self) -> int:
        return len(self._market.names)

    @terminal_call
    def symbols_get(self, *args: Any, group: str | None = None) -> tuple[records.SymbolInfo, ...]:
        no_unnamed(args)
        group = group_arg(group)
        return tuple(self._symbol_info(self._spec(name)) for name in self._market.names
                     if group is None or group_match(name, group))

    @terminal_call
    def symbol_info(self, symbol: str) -> records.SymbolInfo:
        return self._symbol_info(self._spec(symbol))

    @terminal_call
    def symbol_info_tick(self, symbol: str) -> records.Tick:
        return tick_record(server_clock.quote(self._zone, self._market.quote(self._spec(symbol), self._price_ms())))

    @terminal_call
    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        spec = self._spec(symbol)
        (self._selected.add if enable else self._selected.discard)(spec.name)
        return True

    @terminal_call
    def market_book_add(self, symbol: str) -> bool:
        self._books.add(self._spec(symbol).name)
        return True

    @terminal_call
    def market_book_get(self, symbol: str) -> tuple[records.BookInfo, ...]:
        spec = self._spec(symbol)
        if spec.name not in self._books:
            raise CallRefused(RES_E_NOT_FOUND)
        return self._market.book(spec, self._price_ms())

    @terminal_call
    def market_book_release(self, symbol: str) -> bool:
        name = self._spec(symbol).name
        if name not in self._books:
            raise CallRefused(RES_E_NOT_FOUND)
        self._books.discard(name)
        return True

    @terminal_call
    def copy_rates_from(self, symbol: str, timeframe: int, date_from: Any, count: int) -> tuple[records.Bar, ...]:
        spec, tf = self._spec(symbol), timeframe_arg(timeframe)
        return self._history.bars_back(spec, tf, seconds_arg(date_from), 0, count_arg(count), self._price_ms())

    @terminal_call
    def copy_rates_from_pos(self, symbol: str, timeframe: int, start_pos: int, count: int) -> tuple[records.Bar, ...]:
        spec, tf = self._spec(symbol), timeframe_arg(timeframe)
        return self._history.bars_back(spec, tf, None, count_arg(start_pos), count_arg(count), self._price_ms())

    @terminal_call
    def copy_rates_range(self, symbol: str, timeframe: int, date_from: Any, date_to: Any) -> tuple[records.Bar, ...]:
        spec, tf = self._spec(symbol), timeframe_arg(timeframe)
        return self._history.bars_between(spec, tf, seconds_arg(date_from), seconds_arg(date_to), self._price_ms())

    def _ticks(self, symbol: str, from_ms: int, to_ms: int | None, count: int,
               flags: int) -> tuple[records.Tick, ...]:
        try:
            return self._history.ticks(self._spec(symbol), from_ms, to_ms, count, flags, self._price_ms())
        except ValueError:
            raise CallRefused(RES_E_INVALID_PARAMS, "Invalid flags argument") from None

    @terminal_call
    def copy_ticks_from(self, symbol: str, date_from: Any, count: int, flags: int) -> tuple[records.Tick, ...]:
        return self._ticks(symbol, seconds_arg(date_from) * 1000, None, count_arg(count), flags)

    @terminal_call
    def copy_ticks_range(self, symbol: str, date_from: Any, date_to: Any, flags: int) -> tuple[records.Tick, ...]:
        return self._ticks(symbol, seconds_arg(date_from) * 1000, seconds_arg(date_to) * 1000, MAX_TICKS, flags)

    # -- positions, orders, history ---------------------------------------------------------

    @terminal_call
    def positions_total(self) -> int:
        return len(self._ledger.positions)

    @terminal_call
    def positions_get(self, *args: Any, symbol: str | None = None, ticket: int | None = None,
                      group: str | None = None) -> tuple[records.TradePosition, ...]:
        no_unnamed(args)
        selected = self._ledger.select_positions(symbol=symbol, ticket=ticket, group=group_arg(group))
        return tuple(self._position_record(p) for p in selected)

    @terminal_call
    def orders_total(self) -> int:
        return len(self._ledger.orders)

    @terminal_call
    def orders_get(self, *args: Any, symbol: str | None = None, ticket: int | None = None,
                   group: str | None = None) -> tuple[records.TradeOrder, ...]:
        no_unnamed(args)
        t_ms = self._price_ms()
        return tuple(server_clock.order(self._zone, order.record(rules.open_price(
            rules.side_of(order.type), self._market.quote(self._spec(order.symbol), t_ms))))
            for order in self._ledger.select_orders(symbol=symbol, ticket=ticket, group=group_arg(group)))

    def _utc_s(self, date: Any) -> int:
        """A date argument: server time, as the real package takes it."""
        return self._zone.to_utc_s(seconds_arg(date))

    def _history_query(self, args: tuple[Any, ...], group: str | None, position: int | None,
                       ticket: int | None) -> dict[str, Any]:
        if len(args) == 2:
            return {"since": self._utc_s(args[0]), "until": self._utc_s(args[1]), "group": group_arg(group)}
        if not args and (position is not None or ticket is not None):
            return {"position": position, "ticket": ticket}
        raise CallRefused(RES_E_INVALID_PARAMS, "Invalid number of arguments")

    @terminal_call
    def history_orders_total(self, date_from: Any, date_to: Any) -> int:
        return len(self._ledger.select_history_orders(since=self._utc_s(date_from), until=self._utc_s(date_to)))

    @terminal_call
    def history_orders_get(self, *args: Any, group: str | None = None, position: int | None = None,
                           ticket: int | None = None) -> tuple[records.TradeOrder, ...]:
        found = self._ledger.select_history_orders(**self._history_query(args, group, position, ticket))
        return tuple(server_clock.order(self._zone, o) for o in found)

    @terminal_call
    def history_deals_total(self, date_from: Any, date_to: Any) -> int:
        return len(self._ledger.select_deals(since=self._utc_s(date_from), until=self._utc_s(date_to)))

    @terminal_call
    def history_deals_get(self, *args: Any, group: str | None = None, position: int | None = None,
                          ticket: int | None = None) -> tuple[records.TradeDeal, ...]:
        found = self._ledger.select_deals(**self._history_query(args, group, position, ticket))
        return tuple(server_clock.deal(self._zone, d) for d in found)

    # -- trading ----------------------------------------------------------------------------

    def _trade_gate(self, request: object) -> tuple[Any, int]:
        """The parsed request and the terminal's own refusal (0: none) before the trade server sees it."""
        try:
            parsed = parse_request(request)
        except InvalidArgument as invalid:
            raise CallRefused(RES_E_INVALID_PARAMS, str(invalid)) from None
        if self._tradeapi_disabled:
            raise CallRefused(RES_E_AUTO_TRADING_DISABLED)
        if not self._trade_allowed:
            return parsed, TRADE_RETCODE_CLIENT_DISABLES_AT
        if self._server_down_since_ms is not None:
            return parsed, TRADE_RETCODE_CONNECTION
        return parsed, 0

    @terminal_call
    def order_check(self, request: dict[str, Any]) -> records.OrderCheckResult:
        parsed, refused = self._trade_gate(request)
        return self._trader.check(parsed, self._now_ms, refused=refused)

    @terminal_call
    def order_send(self, request: dict[str, Any]) -> records.OrderSendResult:
        parsed, refused = self._trade_gate(request)
        return self._trader.send(parsed, self._now_ms, refused=refused)

    @terminal_call
    def order_calc_margin(self, action: int, symbol: str, volume: float, price: float) -> float:
        side_arg(action)  # margin is the same both ways in this simulation
        return self._accounting.margin(self._spec(symbol), number_arg(volume, "3rd"), number_arg(price, "4th"),
                                       self._price_ms())

    @terminal_call
    def order_calc_profit(self, action: int, symbol: str, volume: float, price_open: float,
                          price_close: float) -> float:
        return self._accounting.profit(self._spec(symbol), side_arg(action), number_arg(volume, "3rd"),
                                       number_arg(price_open, "4th"), number_arg(price_close, "5th"),
                                       self._price_ms())

    # -- the package's pure-Python helpers --------------------------------------------------

    def Buy(self, symbol: str, volume: float, price: float | None = None, *, comment: str | None = None,
            ticket: int | None = None) -> Any:
        return helpers.market_order(self, ORDER_TYPE_BUY, symbol, volume, price, comment, ticket)

    def Sell(self, symbol: str, volume: float, price: float | None = None, *, comment: str | None = None,
             ticket: int | None = None) -> Any:
        return helpers.market_order(self, ORDER_TYPE_SELL, symbol, volume, price, comment, ticket)

    def Close(self, symbol: str, *, comment: str | None = None, ticket: int | None = None) -> Any:
        return helpers.close_positions(self, symbol, comment, ticket)


install_constants(SimulatedMetaTrader5)
