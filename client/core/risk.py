"""The agent's own risk checks: the last word before an order reaches the broker.

The server already adjusted and sized every command, but the agent enforces the user's
limits again on what it actually sees (its equity, its quote, its positions), so a wrong
or replayed command from the server cannot hurt the account. Pure: the caller passes
the time, the account figures and the market state; nothing here reads a clock or MT5.

Commands that open risk (OPEN_POSITION) must pass every rule, the broker check among them
(the terminal logged into another account than the TradingClient declares: ``broker_mismatch``). Commands that reduce it
(CLOSE_POSITION, CLOSE_ALL, MODIFY_POSITION) pass while paused, close-only, stopped out or
outside the trading set, because refusing a close would keep the trader exposed; they are
refused only when expired or while the market is closed (the broker would refuse them).

The money an order risks and the per-trade limit are ``mt5fleet.proto.domain.risk``'s, the
definition the worker sizes with. The agent measures at the price it sends the order at and
refuses a risk above the limit by more than that module's ``EXECUTION_TOLERANCE`` (0.1 % of
the limit: rounding, not a different trade); the worker leaves room for the price to move
in between, so orders it sized within the limit pass here.

The daily stop-out and the weekend auto-close, which act on the account rather than on one
command, live in ``guard``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from mt5fleet.proto.domain.brokers import account_mismatch
from mt5fleet.proto.domain.calendar import EMPTY as NO_CALENDAR
from mt5fleet.proto.domain.calendar import Calendar, NewsWindow, blocking_event
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.risk import exceeds_limit, money_at_risk, risk_limit
from mt5fleet.proto.domain.sessions import MarketState
from mt5fleet.proto.domain.trading import Command


class RejectCode(enum.StrEnum):
    """Why the agent refused a command: ExecutionReport.reject_code and a metrics label.

    The values are a contract with dashboards and alerts: never rename one.
    """

    EXPIRED = "expired"
    PAUSED = "paused"
    CLOSE_ONLY = "close_only"
    STOPPED_OUT = "stopped_out"
    SYMBOL_NOT_ALLOWED = "symbol_not_allowed"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_RISK_PER_TRADE = "max_risk_per_trade"
    DAILY_LOSS = "daily_loss"
    DRAWDOWN = "drawdown"
    MARKET_CLOSED = "market_closed"
    ROLLOVER = "rollover"
    MAX_SPREAD = "max_spread"
    INVALID = "invalid"
    NEWS_WINDOW = "news_window"     # news trading off and a high-impact event of the pair is near
    BROKER_MISMATCH = "broker_mismatch"  # the terminal's account is not the broker the TradingClient declares


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The user's limits as the agent enforces them; a 0 limit is off.

    ``trading_symbols`` is the effective trading set the operator computed from the tier:
    no symbol outside it is ever opened, and an empty set opens nothing (an agent without
    its configuration must not trade). ``allowed_symbols`` narrows it further; empty
    means the whole effective set.
    """

    trading_symbols: frozenset[str]
    max_risk_per_trade_pct: float = 0.0     # percent of equity, 0-100
    max_daily_loss: float = 0.0             # account currency
    max_drawdown: float = 0.0               # fraction of peak equity, 0-1
    max_open_positions: int = 0
    max_spread_points: float = 0.0
    allowed_symbols: frozenset[str] = frozenset()
    paused: bool = False
    close_only: bool = False
    # RiskProfile.allow_news_trading; True without a server config (the local file has no
    # calendar to judge by), the config's value otherwise.
    allow_news_trading: bool = True
    # The broker the TradingClient declares (ClientConfig.broker_name/broker_server): the
    # terminal's logged-in account must be on this server for anything to be opened. Empty
    # without a server config: nothing to compare.
    broker_name: str = ""
    broker_server: str = ""

    def __post_init__(self) -> None:
        # Accept any iterable of names (a list from the config) but keep the value frozen.
        object.__setattr__(self, "trading_symbols", frozenset(self.trading_symbols))
        object.__setattr__(self, "allowed_symbols", frozenset(self.allowed_symbols))
        _require_range("max_risk_per_trade_pct", self.max_risk_per_trade_pct, 0.0, 100.0)
        _require_range("max_daily_loss", self.max_daily_loss, 0.0, math.inf)
        _require_range("max_drawdown", self.max_drawdown, 0.0, 1.0)
        _require_range("max_open_positions", self.max_open_positions, 0, math.inf)
        _require_range("max_spread_points", self.max_spread_points, 0.0, math.inf)

    def may_trade(self, symbol: str) -> bool:
        return symbol in self.trading_symbols and (not self.allowed_symbols or symbol in self.allowed_symbols)


def _require_range(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class StopOutState:
    """The daily stop-out: after a breach of the daily loss or drawdown limit the agent
    closes everything once and opens nothing until ``blocked_until_ms``.

    ``handled_day_ms`` is the trading day (its 17:00 New York start) whose breach was
    already acted on, so the same breach never closes everything twice in one day, not
    even after an explicit reset.
    """

    blocked_until_ms: int = 0
    handled_day_ms: int = 0
    triggered_at_ms: int = 0
    code: RejectCode | None = None
    reason: str = ""

    def is_active(self, now_ms: int) -> bool:
        return now_ms < self.blocked_until_ms


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What the agent sees at the moment it decides: account, quote, symbol, market.

    ``bid``/``ask``/``spread_points`` are the broker's latest quote of the command's
    symbol and ``spec`` its specification; both may be absent for CLOSE_ALL without one.
    """

    now_ms: int
    equity: float
    balance: float
    day_start_equity: float
    peak_equity: float
    open_positions: int
    symbol_positions: int
    bid: float
    ask: float
    spread_points: float
    spec: SymbolSpecInfo | None
    market: MarketState
    stop_out: StopOutState = field(default_factory=StopOutState)
    netting: bool = False     # one position per symbol: an order there opens no new one
    calendar: Calendar = NO_CALENDAR                                # the platform's, through the account's imports
    news_window: NewsWindow = field(default_factory=NewsWindow)
    # What the terminal says it is logged into (account_info().company/.server); empty: not read.
    account_company: str = ""
    account_server: str = ""

    @property
    def daily_loss(self) -> float:
        """Equity lost since the trading day started (negative after a gain)."""
        return self.day_start_equity - self.equity

    @property
    def drawdown(self) -> float:
        return drawdown(self.equity, self.peak_equity)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: RejectCode | None
    reason: str

    @classmethod
    def allow(cls, reason: str) -> Decision:
        return cls(True, None, reason)

    @classmethod
    def refuse(cls, code: RejectCode, reason: str) -> Decision:
        return cls(False, code, reason)


Rule = Callable[[Command, RiskLimits, RiskContext], Decision | None]


def check(command: Command, limits: RiskLimits, ctx: RiskContext) -> Decision:
    """The first rule that refuses decides; the order puts the plainest reason first."""
    rules = _OPEN_RULES if command.type.opens else _REDUCE_RULES
    for rule in rules:
        refusal = rule(command, limits, ctx)
        if refusal is not None:
            return refusal
    passed = f"{command.type.name} {command.symbol or 'all symbols'}: all risk checks passed"
    note = lot_note(command, limits, ctx) if command.type.opens else ""
    return Decision.allow(f"{passed}; {note}" if note else passed)


def lot_note(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> str:
    """Why this lot size is acceptable, in the terms it was sized in: the money it risks to
    the stop loss as a share of the equity, against the per-trade limit (the status page's
    "lot and why")."""
    if cmd.stop_loss is None or ctx.spec is None or not ctx.spec.tick_size > 0 or ctx.equity <= 0:
        return f"{cmd.lot_size:g} lots, no stop loss to measure its risk against" if cmd.stop_loss is None else ""
    risk = trade_risk(cmd, ctx)
    limit = f" (limit {limits.max_risk_per_trade_pct:g}%)" if limits.max_risk_per_trade_pct else ""
    return (f"{cmd.lot_size:g} lots risk {risk:.2f} to the stop loss, {risk / ctx.equity:.2%} of equity "
            f"{ctx.equity:.2f}{limit}")


# -------------------------------------------------------------------------------- rules


def _expired(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    # Command.is_expired (now >= expires_at) is the one rule every component shares: at
    # the expiry instant itself the command is already too late.
    if cmd.is_expired(ctx.now_ms):
        late = ctx.now_ms - cmd.expires_at_ms
        return Decision.refuse(RejectCode.EXPIRED, f"command expired at {cmd.expires_at_ms} "
                                                   f"and it is now {ctx.now_ms} ({late} ms late)")
    return None


def _market_closed(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    if not ctx.market.is_open:
        return Decision.refuse(RejectCode.MARKET_CLOSED, "the FX market is closed (Friday 17:00 to Sunday "
                                                         f"17:00 New York); it opens at {ctx.market.next_open_ms}")
    return None


def _invalid_open(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    problem = _open_problem(cmd, ctx)
    return None if problem is None else Decision.refuse(RejectCode.INVALID, problem)


def _open_problem(cmd: Command, ctx: RiskContext) -> str | None:
    if cmd.symbol is None:
        return "an OPEN command needs a symbol"
    if not cmd.lot_size > 0:
        return f"lot size {cmd.lot_size} is not positive"
    if ctx.spec is None or ctx.spec.tick_size <= 0 or ctx.spec.tick_value <= 0:
        return f"no usable symbol specification for {cmd.symbol} (tick size and tick value needed)"
    if not 0 < ctx.bid <= ctx.ask:
        return f"no valid quote for {cmd.symbol}: bid {ctx.bid}, ask {ctx.ask}"
    if cmd.order_type.is_pending and cmd.entry_price is None:
        return f"a {cmd.order_type.name} order needs an entry price"
    entry = open_price(cmd, ctx)
    if cmd.stop_loss is not None and not _stop_on_loss_side(cmd, entry):
        side = "below" if cmd.order_type.is_buy else "above"
        return f"stop loss {cmd.stop_loss} must be {side} the entry {entry} of a {cmd.order_type.name}"
    return None


def _stop_on_loss_side(cmd: Command, entry: float) -> bool:
    assert cmd.stop_loss is not None
    return cmd.stop_loss < entry if cmd.order_type.is_buy else cmd.stop_loss > entry


def _paused(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    if limits.paused:
        return Decision.refuse(RejectCode.PAUSED, "trading is paused for this account: no new positions")
    return None


def _close_only(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    if limits.close_only:
        return Decision.refuse(RejectCode.CLOSE_ONLY, "close-only mode: positions may be closed, not opened")
    return None


def _stopped_out(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    stop = ctx.stop_out
    if stop.is_active(ctx.now_ms):
        return Decision.refuse(RejectCode.STOPPED_OUT, f"stopped out ({stop.reason}); new positions blocked "
                                                       f"until {stop.blocked_until_ms} or an explicit reset")
    return None


def _symbol_not_allowed(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    assert cmd.symbol is not None
    if cmd.symbol not in limits.trading_symbols:
        allowed = ", ".join(sorted(limits.trading_symbols)) or "none"
        return Decision.refuse(RejectCode.SYMBOL_NOT_ALLOWED,
                               f"{cmd.symbol} is not in the effective trading set ({allowed})")
    if not limits.may_trade(cmd.symbol):
        return Decision.refuse(RejectCode.SYMBOL_NOT_ALLOWED, f"{cmd.symbol} is not in the user's allowed "
                                                              f"symbols ({', '.join(sorted(limits.allowed_symbols))})")
    return None


def _rollover(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    if ctx.market.in_rollover:
        return Decision.refuse(RejectCode.ROLLOVER, "inside the 17:00 New York rollover window: spreads are wide "
                                                    "and swaps roll, no new positions")
    return None


def _max_open_positions(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    cap = limits.max_open_positions
    if ctx.netting and ctx.symbol_positions:
        return None  # it adds to (or reduces) the symbol's one position: the count stays
    if cap and ctx.open_positions >= cap:
        return Decision.refuse(RejectCode.MAX_OPEN_POSITIONS, f"{ctx.open_positions} positions open "
                                                              f"({ctx.symbol_positions} on {cmd.symbol}), "
                                                              f"the limit is {cap}")
    return None


def _max_spread(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    cap = limits.max_spread_points
    if cap and ctx.spread_points > cap:
        return Decision.refuse(RejectCode.MAX_SPREAD, f"spread {ctx.spread_points:g} points on {cmd.symbol} "
                                                      f"is above the maximum {cap:g}")
    return None


def _daily_loss(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    breach = daily_loss_breach(limits, ctx.equity, ctx.day_start_equity)
    return None if breach is None else Decision.refuse(RejectCode.DAILY_LOSS, breach)


def _drawdown(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    breach = drawdown_breach(limits, ctx.equity, ctx.peak_equity)
    return None if breach is None else Decision.refuse(RejectCode.DRAWDOWN, breach)


def _max_risk_per_trade(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    pct = limits.max_risk_per_trade_pct
    if not pct:
        return None
    if cmd.stop_loss is None:
        return Decision.refuse(RejectCode.MAX_RISK_PER_TRADE, f"no stop loss: the risk is unbounded and the "
                                                              f"limit is {pct:g}% of equity")
    risk, allowed = trade_risk(cmd, ctx), risk_limit(ctx.equity, pct)
    if exceeds_limit(risk, allowed):
        return Decision.refuse(RejectCode.MAX_RISK_PER_TRADE, f"risk {risk:.2f} ({cmd.lot_size:g} lots to the "
                                                              f"stop loss {cmd.stop_loss}) is above {allowed:.2f}, "
                                                              f"{pct:g}% of equity {ctx.equity:.2f}")
    return None


def _news_window(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    # Only opening commands: open positions are left as they are around news (the user did
    # not ask for them to be closed), and closing or modifying them stays possible.
    if limits.allow_news_trading or not cmd.symbol:
        return None
    event = blocking_event(ctx.calendar, cmd.symbol, ctx.now_ms, ctx.news_window)
    if event is None:
        return None
    return Decision.refuse(RejectCode.NEWS_WINDOW, f"news trading is off and {event.describe()} is within the "
                                                   f"news window of {cmd.symbol}")


def _broker_mismatch(cmd: Command, limits: RiskLimits, ctx: RiskContext) -> Decision | None:
    # Only opening commands: a position already open on whatever account the terminal holds
    # can still be closed (refusing a close would keep the trader exposed).
    wrong = account_mismatch(limits.broker_name, limits.broker_server, ctx.account_company, ctx.account_server)
    if wrong is None:
        return None
    return Decision.refuse(RejectCode.BROKER_MISMATCH, f"{wrong}: no new positions until the terminal is logged "
                                                       "into the declared account or the TradingClient is corrected")


_OPEN_RULES: tuple[Rule, ...] = (
    # Outside the trading set comes before "invalid": an unknown symbol has no spec or quote,
    # and "not allowed" is the reason that tells the user what to change.
    # A wrong account comes right after expiry: nothing else about the order matters then.
    _expired, _broker_mismatch, _symbol_not_allowed, _invalid_open, _paused, _close_only, _stopped_out, _market_closed,
    _rollover, _news_window, _max_open_positions, _max_spread, _daily_loss, _drawdown, _max_risk_per_trade,
)
_REDUCE_RULES: tuple[Rule, ...] = (_expired, _market_closed)


# ------------------------------------------------------------------------------ figures


def open_price(cmd: Command, ctx: RiskContext) -> float:
    """Where the order will trade: a market order at today's ask (buy) or bid (sell), not
    the worker's older quote; a pending order at its entry."""
    if cmd.order_type.is_pending:
        assert cmd.entry_price is not None
        return cmd.entry_price
    return ctx.ask if cmd.order_type.is_buy else ctx.bid


def trade_risk(cmd: Command, ctx: RiskContext) -> float:
    """Account money lost if the stop loss is hit, from where the order trades now, at the
    broker's tick value: lots x ticks to the SL x tick value."""
    assert cmd.stop_loss is not None and ctx.spec is not None
    return money_at_risk(cmd.lot_size, open_price(cmd, ctx), cmd.stop_loss, tick_size=ctx.spec.tick_size,
                         tick_value=ctx.spec.tick_value)


def drawdown(equity: float, peak_equity: float) -> float:
    """Fraction of the peak equity lost; 0 while no peak is known. (peak - equity) / peak
    rather than 1 - equity / peak: the latter puts 9,000 of 10,000 at 0.0999..., under 10%."""
    return 0.0 if peak_equity <= 0 else max(0.0, (peak_equity - equity) / peak_equity)


def daily_loss_breach(limits: RiskLimits, equity: float, day_start_equity: float) -> str | None:
    loss = day_start_equity - equity
    if limits.max_daily_loss and loss >= limits.max_daily_loss:
        return (f"daily loss {loss:.2f} (equity {equity:.2f}, {day_start_equity:.2f} at the start of the "
                f"trading day) reached the limit {limits.max_daily_loss:.2f}")
    return None


def drawdown_breach(limits: RiskLimits, equity: float, peak_equity: float) -> str | None:
    lost = drawdown(equity, peak_equity)
    if limits.max_drawdown and lost >= limits.max_drawdown:
        return (f"drawdown {lost:.2%} (equity {equity:.2f}, peak {peak_equity:.2f}) reached the limit "
                f"{limits.max_drawdown:.2%}")
    return None
