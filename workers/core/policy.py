"""One user's trading policy as the adjustment worker applies it, everything the worker
knows about that user at the instant a signal arrives, and the eligibility gates that
decide whether the user gets a command for a signal at all (``adjust`` runs them).

Pure values: ``policy_from_config`` reads the typed ClientConfig that
``mt5fleet.proto.validation.check_client_config`` made from the operator's KV entry, once
per change of that entry. The edge has already refused nonsense (a negative lot cap, an
unknown sizing mode from a newer operator); ``UserPolicy`` still checks its own numbers,
so a policy built any other way cannot hold them either.

The config keeps the wire's conventions: a 0 limit means "unset" and gets the default
below (or "no cap" where the config says so).
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.calendar import EMPTY as NO_CALENDAR
from mt5fleet.proto.domain.calendar import Calendar, NewsWindow, blocking_event
from mt5fleet.proto.domain.config import ClientConfig, SizingMode
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.sessions import MarketState, market_state
from mt5fleet.proto.domain.trading import CommandType, Signal, SubscriptionTier
from mt5fleet.workers.core.sizing_inputs import SizingInputs

DEFAULT_MAX_QUOTE_AGE_MS = 2_000       # SPEC §5: no command from a quote older than 2 s
DEFAULT_MAX_DEVIATION_POINTS = 20      # 2 pips on 5-digit FX
# RISK_PERCENT is the default sizing mode, so a config without a risk figure must still
# size something; 1% stays under the agent's own default limit (2%), which it enforces.
DEFAULT_RISK_PER_TRADE_PCT = 1.0


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """A user's effective limits and preferences; 0 limits already replaced by defaults."""

    user_id: str
    tier: SubscriptionTier = SubscriptionTier.UNSPECIFIED
    tier_name: str = ""
    trading_symbols: frozenset[str] = frozenset()
    allowed_symbols: frozenset[str] = frozenset()   # RiskProfile narrowing; empty: all
    paused: bool = False
    close_only: bool = False
    max_spread_points: float = 0.0                  # 0: no cap
    max_quote_age_ms: int = DEFAULT_MAX_QUOTE_AGE_MS
    max_signal_age_ms: int = 0                      # 0: only the signal's expires_at counts
    sizing_mode: SizingMode = SizingMode.RISK_PERCENT
    sizing_value: float = 0.0                       # lots per 1,000 USD for the multipliers
    preferred_lot_size: float = 0.0
    max_risk_per_trade_pct: float = DEFAULT_RISK_PER_TRADE_PCT
    max_lot: float = 0.0                            # 0: the broker's volume_max
    conservative_mode: bool = False
    max_deviation_points: int = DEFAULT_MAX_DEVIATION_POINTS
    # RiskProfile.allow_news_trading; True here so that a policy built without a config
    # (tests, tools) is not silently restricted; the config's value always replaces it.
    allow_news_trading: bool = True

    def __post_init__(self) -> None:
        # Accept any iterable of names but keep the value frozen and hashable.
        object.__setattr__(self, "trading_symbols", frozenset(self.trading_symbols))
        object.__setattr__(self, "allowed_symbols", frozenset(self.allowed_symbols))
        object.__setattr__(self, "sizing_mode", SizingMode(self.sizing_mode))
        for name in ("max_spread_points", "max_quote_age_ms", "max_signal_age_ms", "sizing_value",
                     "preferred_lot_size", "max_lot", "max_deviation_points"):
            _require(name, getattr(self, name), 0.0, math.inf)
        _require("max_risk_per_trade_pct", self.max_risk_per_trade_pct, 0.0, 100.0)

    def may_trade(self, symbol: str) -> bool:
        """In the tier's effective trading set and, if the risk profile lists symbols, in it."""
        return symbol in self.trading_symbols and (not self.allowed_symbols or symbol in self.allowed_symbols)


def _require(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")


def policy_from_config(config: ClientConfig) -> UserPolicy:
    """The policy a checked ClientConfig describes, 0 limits replaced by the defaults above."""
    risk, prefs = config.risk, config.preferences
    return UserPolicy(
        user_id=config.user_id,
        tier=config.tier,
        tier_name=config.tier_name,
        trading_symbols=frozenset(config.trading_symbols),
        allowed_symbols=frozenset(risk.allowed_symbols),
        paused=config.paused,
        close_only=config.close_only,
        max_spread_points=float(risk.max_spread_points),
        max_quote_age_ms=config.max_quote_age_ms or DEFAULT_MAX_QUOTE_AGE_MS,
        max_signal_age_ms=config.max_signal_age_ms,
        sizing_mode=prefs.sizing_mode,
        sizing_value=prefs.sizing_value,
        preferred_lot_size=prefs.preferred_lot_size,
        max_risk_per_trade_pct=risk.max_risk_per_trade_pct or DEFAULT_RISK_PER_TRADE_PCT,
        max_lot=risk.max_lot,
        conservative_mode=prefs.conservative_mode,
        max_deviation_points=risk.max_deviation_points or DEFAULT_MAX_DEVIATION_POINTS,
        allow_news_trading=risk.allow_news_trading,
    )


PositionRef = tuple[str, int]   # (command id that opened it, MT5 position ticket)


@dataclass(frozen=True, slots=True)
class UserState:
    """What the worker knows about one user when a signal arrives.

    The mappings are read, never changed: the worker may pass its live dictionaries.
    ``position_volumes`` (ticket -> lots) is optional: without a position's volume a
    partial CLOSE closes the whole position.
    """

    policy: UserPolicy
    quotes: Mapping[str, Quote] = field(default_factory=dict)             # canonical symbol -> latest
    specs: Mapping[str, SymbolSpecInfo] = field(default_factory=dict)     # canonical symbol -> spec
    account: AccountSnapshot | None = None
    stopped_out: bool = False
    positions_by_signal: Mapping[str, tuple[PositionRef, ...]] = field(default_factory=dict)
    position_volumes: Mapping[int, float] = field(default_factory=dict)
    # The platform's economic calendar and news window (the same for every user).
    calendar: Calendar = NO_CALENDAR
    news_window: NewsWindow = field(default_factory=NewsWindow)

    @property
    def user_id(self) -> str:
        return self.policy.user_id


class SkipReason(enum.StrEnum):
    """Why a user got no command for a signal. The values are Prometheus labels: never rename one."""

    EXPIRED_SIGNAL = "expired_signal"
    SIGNAL_TOO_OLD = "signal_too_old"
    SYMBOL_NOT_TRADED = "symbol_not_traded"
    PAUSED = "paused"
    CLOSE_ONLY = "close_only"
    STOPPED_OUT = "stopped_out"
    MARKET_CLOSED = "market_closed"
    ROLLOVER = "rollover"
    NO_QUOTE = "no_quote"
    STALE_QUOTE = "stale_quote"
    WIDE_SPREAD = "wide_spread"
    NO_SPEC = "no_spec"
    NO_ACCOUNT = "no_account"
    LOT_BELOW_MINIMUM = "lot_below_minimum"
    NO_POSITION = "no_position"
    INVALID_LEVELS = "invalid_levels"
    NO_STOP_LOSS = "no_stop_loss"             # risk-% sizing needs a distance to the stop
    NO_CONVERSION = "no_conversion"           # no quote converts the account's money to USD
    STALE_CONVERSION = "stale_conversion"     # a conversion quote older than the max quote age
    NEWS_WINDOW = "news_window"               # news trading off and a high-impact event of the pair is near


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason
    detail: str             # plain words, with the numbers that decided it
    sizing: SizingInputs | None = None   # what the sizing saw, when sizing decided the skip


# A gate returns a Skip or None; a plan runs its gates in order and the first skip wins.
Gate = Callable[[Signal, UserState, int], Skip | None]


# ------------------------------------------------------------------------ eligibility
# Plans order their gates cheapest and plainest first: a paused user is told "paused",
# not "no quote".


def _expired(signal: Signal, user: UserState, now: int) -> Skip | None:
    if signal.is_expired(now):
        return Skip(SkipReason.EXPIRED_SIGNAL, f"signal expired at {signal.expires_at_ms}, now is {now}")
    return None


def _too_old(signal: Signal, user: UserState, now: int) -> Skip | None:
    cap, age = user.policy.max_signal_age_ms, now - signal.created_at_ms
    if cap and age > cap:
        return Skip(SkipReason.SIGNAL_TOO_OLD, f"signal is {age} ms old, the user's maximum is {cap} ms")
    return None


def _paused(signal: Signal, user: UserState, now: int) -> Skip | None:
    return Skip(SkipReason.PAUSED, "the user is paused: no new positions") if user.policy.paused else None


def _stopped_out(signal: Signal, user: UserState, now: int) -> Skip | None:
    if user.stopped_out:
        return Skip(SkipReason.STOPPED_OUT, "the user's agent reported its daily stop-out (daily loss or drawdown "
                                            "limit): no new positions until the next trading day")
    return None


def _close_only(signal: Signal, user: UserState, now: int) -> Skip | None:
    if user.policy.close_only:
        return Skip(SkipReason.CLOSE_ONLY, "the user is in close-only mode: no new positions")
    return None


def _not_traded(signal: Signal, user: UserState, now: int) -> Skip | None:
    if not user.policy.may_trade(signal.symbol):
        traded = ", ".join(sorted(user.policy.trading_symbols)) or "none"
        return Skip(SkipReason.SYMBOL_NOT_TRADED, f"{signal.symbol} is not in the user's trading set ({traded})")
    return None


@functools.lru_cache(maxsize=16)
def _market(now_ms: int) -> MarketState:
    # Every user of a signal is adjusted at the same now_ms: compute the session once.
    return market_state(now_ms)


def _market_closed(signal: Signal, user: UserState, now: int) -> Skip | None:
    state = _market(now)
    if not state.is_open:
        return Skip(SkipReason.MARKET_CLOSED, f"the FX market is closed (Friday 17:00 to Sunday 17:00 New York); "
                                              f"it opens at {state.next_open_ms}")
    return None


def _rollover(signal: Signal, user: UserState, now: int) -> Skip | None:
    if _market(now).in_rollover:
        return Skip(SkipReason.ROLLOVER, "inside the 17:00 New York rollover window: no new positions")
    return None


def _news_window(signal: Signal, user: UserState, now: int) -> Skip | None:
    """Only new positions: open ones are neither closed nor kept from being closed or
    modified around news (the user did not ask for that; closing them would be a trade
    of its own that the user's news setting forbids as much as opening one)."""
    if user.policy.allow_news_trading:
        return None
    event = blocking_event(user.calendar, signal.symbol, now, user.news_window)
    if event is None:
        return None
    window = user.news_window
    return Skip(SkipReason.NEWS_WINDOW, f"news trading is off and {event.describe()} is within the news window "
                                        f"({window.before_ms // 60_000} min before to {window.after_ms // 60_000} "
                                        f"min after) of {signal.symbol}")


def _no_quote(signal: Signal, user: UserState, now: int) -> Skip | None:
    if signal.symbol not in user.quotes:
        return Skip(SkipReason.NO_QUOTE, f"no broker quote of {signal.symbol} from the user")
    return None


def is_stale(quote: Quote, now_ms: int, max_age_ms: int) -> bool:
    """The one age rule for every quote a command is built from, conversion quotes included."""
    return now_ms - quote.time_ms > max_age_ms


def _stale_quote(signal: Signal, user: UserState, now: int) -> Skip | None:
    quote, cap = user.quotes[signal.symbol], user.policy.max_quote_age_ms
    if is_stale(quote, now, cap):
        return Skip(SkipReason.STALE_QUOTE, f"the latest {signal.symbol} quote is {now - quote.time_ms} ms old, "
                                            f"the maximum is {cap} ms")
    return None


def _wide_spread(signal: Signal, user: UserState, now: int) -> Skip | None:
    cap = user.policy.max_spread_points
    if not cap:
        return None
    spread = spread_points(user.quotes[signal.symbol], user.specs.get(signal.symbol))
    if spread > cap:
        return Skip(SkipReason.WIDE_SPREAD, f"{signal.symbol} spread is {spread:g} points, the maximum is {cap:g}")
    return None


def _no_spec(signal: Signal, user: UserState, now: int) -> Skip | None:
    if signal.symbol not in user.specs:
        return Skip(SkipReason.NO_SPEC, f"no symbol specification of {signal.symbol} from the user's broker")
    return None


def _no_account(signal: Signal, user: UserState, now: int) -> Skip | None:
    mode = user.policy.sizing_mode
    if mode.needs_account and user.account is None:
        return Skip(SkipReason.NO_ACCOUNT, f"{mode.name} sizing needs the account's equity/balance, none reported")
    return None


def _no_position(signal: Signal, user: UserState, now: int) -> Skip | None:
    if not user.positions_by_signal.get(signal.target_signal_id or ""):
        return Skip(SkipReason.NO_POSITION, f"the user holds no position from signal {signal.target_signal_id}")
    return None


def spread_points(quote: Quote, spec: SymbolSpecInfo | None) -> float:
    """Ask minus bid in points of the spec's digits, else the quote's; else the broker's own figure."""
    digits = spec.digits if spec is not None else quote.digits or None
    if digits is None:
        return quote.spread_points
    return float((Decimal(repr(quote.ask)) - Decimal(repr(quote.bid))).scaleb(digits))


# Risk-reducing actions pass paused, close-only and stopped-out users and symbols outside
# the trading set (refusing a close keeps the trader exposed); a closed market still stops
# them, as the broker would. Rollover only stops new positions.
SIGNAL_GATES: tuple[Gate, ...] = (_expired, _too_old)
GATES: dict[CommandType, tuple[Gate, ...]] = {
    CommandType.OPEN_POSITION: (*SIGNAL_GATES, _paused, _stopped_out, _close_only, _not_traded, _market_closed,
                                _rollover, _news_window, _no_quote, _stale_quote, _wide_spread, _no_spec, _no_account),
    CommandType.CLOSE_POSITION: (*SIGNAL_GATES, _no_position, _market_closed),
    CommandType.MODIFY_POSITION: (*SIGNAL_GATES, _no_position, _market_closed, _no_quote, _stale_quote, _no_spec),
    CommandType.CLOSE_ALL: (*SIGNAL_GATES, _market_closed),
}


def first_skip(signal: Signal, user: UserState, now_ms: int) -> Skip | None:
    """The first gate of the signal's action that refuses this user, or None: eligible."""
    for gate in GATES[signal.action]:
        skip = gate(signal, user, now_ms)
        if skip is not None:
            return skip
    return None
