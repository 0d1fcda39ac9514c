"""Market values: quotes, symbol specifications, indicators, sessions, correlations.

Conventions: see the package (``mt5fleet.proto.domain``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.proto.domain.trading import SubscriptionTier
from mt5fleet.proto.domain.violations import Violation


@dataclass(frozen=True, slots=True)
class Quote:
    """One broker quote of one symbol (ClientPrice)."""

    symbol: str
    bid: float
    ask: float
    time_ms: int
    spread_points: float
    broker_symbol: str = ""
    digits: int = 0
    broker_server: str = ""

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> float:
        """Ask minus bid in quote currency (``spread_points`` is the broker's figure)."""
        return self.ask - self.bid


@dataclass(frozen=True, slots=True)
class PriceBatch:
    """The quotes one agent sent at one instant (ClientPriceStream), one per symbol."""

    user_id: str
    broker_name: str
    account_number: str
    sent_at_ms: int
    sequence: int
    quotes: tuple[Quote, ...]

    def quote(self, symbol: str) -> Quote | None:
        return next((q for q in self.quotes if q.symbol == symbol), None)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(q.symbol for q in self.quotes)


@dataclass(frozen=True, slots=True)
class SymbolSpecInfo:
    """How one broker trades one symbol (SymbolSpec)."""

    symbol: str
    broker_symbol: str
    digits: int
    point: float
    contract_size: float
    tick_size: float
    tick_value: float
    volume_min: float
    volume_max: float
    volume_step: float
    stops_level: int = 0
    freeze_level: int = 0
    filling_modes: int = 0
    trade_mode: int = 4          # MT5 SYMBOL_TRADE_MODE_FULL
    currency_base: str = ""
    currency_profit: str = ""
    currency_margin: str = ""
    spread_points: int = 0
    trade_calc_mode: int = 0


@dataclass(frozen=True, slots=True)
class SymbolSpecs:
    """The broker's specifications of every symbol an agent reported (SymbolSpecList).

    A bad spec does not cost the good ones: it is left out and listed in ``rejected``.
    """

    user_id: str
    time_ms: int
    specs: tuple[SymbolSpecInfo, ...]
    rejected: tuple[Violation, ...] = ()

    def spec(self, symbol: str) -> SymbolSpecInfo | None:
        return next((s for s in self.specs if s.symbol == symbol), None)


@dataclass(frozen=True, slots=True)
class Indicators:
    """Indicators on closed M1 bars; a value is 0 until its window is full."""

    sma_20: float = 0.0
    sma_50: float = 0.0
    ema_12: float = 0.0
    ema_26: float = 0.0
    macd_line: float = 0.0
    macd_signal: float = 0.0
    rsi: float = 0.0
    bollinger_upper: float = 0.0
    bollinger_middle: float = 0.0
    bollinger_lower: float = 0.0


@dataclass(frozen=True, slots=True)
class Session:
    """FX session state at one instant."""

    is_open: bool = False
    in_rollover: bool = False
    active_sessions: tuple[str, ...] = ()
    next_open_ms: int | None = None
    next_close_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Correlation:
    symbol_a: str
    symbol_b: str
    coefficient: float
    window: int
    computed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarketData:
    """Server-computed market data of one symbol (ClientMarketData)."""

    symbol: str
    bid: float
    ask: float
    time_ms: int
    tier: SubscriptionTier
    indicators: Indicators
    session: Session
    correlations: tuple[Correlation, ...] = ()
    bar_time_ms: int | None = None
