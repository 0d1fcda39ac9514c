"""What makes one simulated broker differ from another: names, prices, rules, execution and clock.

A ``BrokerProfile`` is pure data. The simulated terminal derives everything a user sees
from it and the reference feed: broker quote = reference mid + offset, widened to the
broker's spread; symbol names with the broker's suffix; fills after the broker's latency
with its slippage, requotes and rejections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mt5fleet.client.core.mt5_constants import (
    ACCOUNT_MARGIN_MODE_RETAIL_HEDGING,
    ACCOUNT_MARGIN_MODE_RETAIL_NETTING,
    ACCOUNT_TRADE_MODE_DEMO,
    ACCOUNT_TRADE_MODE_REAL,
    SYMBOL_TRADE_EXECUTION_INSTANT,
    SYMBOL_TRADE_EXECUTION_MARKET,
)
from mt5fleet.client.sim.server_clock import NEW_YORK_CLOSE, UTC, ServerZone

# MQL5's SYMBOL_FILLING_* flags of SymbolInfo.filling_mode. The Python package does not
# export them, and they are not the ORDER_FILLING_* values of a request (FOK=0, IOC=1).
SYMBOL_FILLING_FOK = 1
SYMBOL_FILLING_IOC = 2

# A retail "standard" account's typical spread per canonical symbol, in points of the
# reference digits; profiles scale it (raw accounts are tighter, cent accounts wider).
TYPICAL_SPREAD_POINTS: Mapping[str, int] = MappingProxyType({
    "EURUSD": 12, "GBPUSD": 16, "USDJPY": 14, "USDCHF": 17, "AUDUSD": 14, "USDCAD": 19,
    "NZDUSD": 20, "EURGBP": 15, "EURJPY": 20, "GBPJPY": 28, "XAUUSD": 30,
})
DEFAULT_CONTRACT_SIZE = 100_000.0
CONTRACT_SIZES: Mapping[str, float] = MappingProxyType({"XAUUSD": 100.0})


def _frozen(mapping: Mapping[str, float] | Mapping[str, int]) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class BrokerProfile:
    """One broker and one trading account on it, as the simulated terminal presents them."""

    company: str
    server: str
    login: int
    password: str
    account_name: str = "Simulated Trader"
    # Symbol names: canonical name + suffix ("EURUSD" -> "EURUSD.m").
    suffix: str = ""
    # Prices. Spreads and offsets are in points of the broker's digits for the symbol.
    spread_multiplier: float = 1.0
    spread_points: Mapping[str, int] = field(default_factory=dict)  # per canonical symbol, wins over the multiplier
    offset_points: int = 0  # broker mid minus reference mid, every symbol
    symbol_offsets: Mapping[str, int] = field(default_factory=dict)  # per canonical symbol, wins over offset_points
    digits: Mapping[str, int] = field(default_factory=dict)  # per canonical symbol; default: the feed's
    contract_sizes: Mapping[str, float] = field(default_factory=lambda: dict(CONTRACT_SIZES))
    # Trading rules.
    volume_min: float = 0.01
    volume_max: float = 100.0
    volume_step: float = 0.01
    stops_level: int = 0  # points: SL/TP and pending prices must keep this distance from the market
    freeze_level: int = 0  # points: orders and SL/TP this close to the market cannot be changed
    filling_modes: int = SYMBOL_FILLING_FOK | SYMBOL_FILLING_IOC
    execution_mode: int = SYMBOL_TRADE_EXECUTION_INSTANT  # INSTANT requotes beyond deviation; MARKET never does
    # Execution, on the injected clock: the fill price is the price at now + latency.
    latency_ms: int = 50
    slippage_max_points: int = 0
    slippage_probability: float = 0.0
    requote_probability: float = 0.0
    reject_probability: float = 0.0
    # Account.
    margin_mode: int = ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
    leverage: int = 100
    currency: str = "USD"
    balance: float = 10_000.0
    trade_mode: int = ACCOUNT_TRADE_MODE_DEMO
    margin_call_level: float = 100.0  # margin level %, informational
    stop_out_level: float = 50.0  # margin level % at which the worst position is closed
    symbols: tuple[str, ...] | None = None  # canonical symbols offered; None: all of the feed's
    # The trade server's clock, in which the terminal reports every time (most brokers: New York close).
    server_zone: ServerZone = NEW_YORK_CLOSE

    def __post_init__(self) -> None:
        for name in ("spread_points", "symbol_offsets", "digits", "contract_sizes"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name in ("slippage_probability", "requote_probability", "reject_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if not 0 < self.volume_min <= self.volume_max or self.volume_step <= 0:
            raise ValueError("volumes need 0 < volume_min <= volume_max and volume_step > 0")
        if self.leverage <= 0 or self.latency_ms < 0 or self.stops_level < 0 or self.freeze_level < 0:
            raise ValueError("leverage must be positive; latency, stops and freeze levels not negative")
        if self.margin_mode not in (ACCOUNT_MARGIN_MODE_RETAIL_NETTING, ACCOUNT_MARGIN_MODE_RETAIL_HEDGING):
            raise ValueError("margin_mode must be retail netting or retail hedging")

    @property
    def hedging(self) -> bool:
        return self.margin_mode == ACCOUNT_MARGIN_MODE_RETAIL_HEDGING

    def broker_symbol(self, canonical: str) -> str:
        return canonical + self.suffix

    def spread_for(self, canonical: str, reference_spread: int, digits_shift: int = 0) -> int:
        """The spread in broker points; ``digits_shift`` = broker digits - reference digits."""
        if canonical in self.spread_points:
            return self.spread_points[canonical]
        scale = 10.0**digits_shift
        typical = TYPICAL_SPREAD_POINTS.get(canonical, reference_spread * 5) * self.spread_multiplier
        # Never tighter than the reference market itself.
        return max(round(reference_spread * scale), round(typical * scale), 1)

    def offset_for(self, canonical: str) -> int:
        return self.symbol_offsets.get(canonical, self.offset_points)

    def contract_size(self, canonical: str) -> float:
        return self.contract_sizes.get(canonical, DEFAULT_CONTRACT_SIZE)

    def evolve(self, **changes: object) -> BrokerProfile:
        """A copy with some fields changed (tests switch off randomness this way)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


BROKERS: Mapping[str, BrokerProfile] = MappingProxyType({
    # ECN-style raw account: tight spreads, market execution (no requotes: deviation is
    # ignored, slippage is not), hedging, high leverage, a GMT+2/+3 server.
    "icm-raw": BrokerProfile(
        company="Raw Trading Ltd (simulated)", server="ICMarketsSC-Demo", login=51_234_567, password="raw-demo-1",
        suffix=".raw", spread_multiplier=0.2, offset_points=1, symbol_offsets={"XAUUSD": 5},
        execution_mode=SYMBOL_TRADE_EXECUTION_MARKET, latency_ms=30, slippage_max_points=3,
        slippage_probability=0.1, reject_probability=0.002, leverage=500, server_zone=NEW_YORK_CLOSE,
    ),
    # Standard account, market execution that fills IOC only (FOK gets "unsupported filling
    # mode"), a stops and a freeze level, netting, a server on UTC.
    "exness-m": BrokerProfile(
        company="Exness (simulated)", server="Exness-MT5Trial", login=81_234_567, password="m-demo-2",
        suffix=".m", offset_points=-2, symbol_offsets={"XAUUSD": 20}, stops_level=10, freeze_level=5,
        filling_modes=SYMBOL_FILLING_IOC, execution_mode=SYMBOL_TRADE_EXECUTION_MARKET, latency_ms=80,
        slippage_max_points=5, slippage_probability=0.2, reject_probability=0.01,
        margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_NETTING, leverage=200, server_zone=UTC,
    ),
    # Cent account: balance in US cents, wide spreads, instant execution with requotes,
    # slow and noisy, hedging, a GMT+2/+3 server.
    "fbs-cent": BrokerProfile(
        company="FBS (simulated)", server="FBS-Real", login=71_234_567, password="cent-live-3",
        suffix="i", spread_multiplier=1.6, offset_points=3, stops_level=20, filling_modes=SYMBOL_FILLING_FOK,
        latency_ms=150, slippage_max_points=8, slippage_probability=0.3, requote_probability=0.05,
        reject_probability=0.02, leverage=1000, currency="USC", balance=100_000.0,
        trade_mode=ACCOUNT_TRADE_MODE_REAL, server_zone=NEW_YORK_CLOSE,
    ),
    # EU-regulated retail account: EUR deposit, 1:30, instant execution, netting, no suffix, UTC server.
    "eu-netting": BrokerProfile(
        company="EuroRetail Markets (simulated)", server="EuroRetail-Live", login=3_012_345, password="eu-live-4",
        spread_multiplier=1.2, volume_max=50.0, latency_ms=60, slippage_max_points=2, slippage_probability=0.1,
        requote_probability=0.01, margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_NETTING, leverage=30, currency="EUR",
        balance=5_000.0, trade_mode=ACCOUNT_TRADE_MODE_REAL, server_zone=UTC,
    ),
})
