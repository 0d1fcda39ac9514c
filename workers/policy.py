"""One user's trading policy as the adjustment worker applies it, and everything the
worker knows about that user at the instant a signal arrives.

Pure values: ``policy_from_config`` reads a ClientConfig (the operator's KV entry) and
nothing else. The config is not checked at the edge like agent reports are, so the
policy checks its own numbers and raises ``ValueError`` on nonsense (a negative lot cap,
an unknown sizing mode from a newer operator): the worker counts that user as an error
for the signal instead of guessing how to size a trade.

Wire conventions carried over: a 0 limit means "unset" and gets the default below (or
"no cap" where the proto says so).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mt5fleet.proto.domain import AccountSnapshot, Quote, SubscriptionTier, SymbolSpecInfo
from mt5fleet.proto.v1.config_pb2 import ClientConfig

DEFAULT_MAX_QUOTE_AGE_MS = 2_000       # SPEC §5: no command from a quote older than 2 s
DEFAULT_MAX_DEVIATION_POINTS = 20      # 2 pips on 5-digit FX
# RISK_PERCENT is the default sizing mode, so a config without a risk figure must still
# size something; 1% stays under the agent's own default limit (2%), which it enforces.
DEFAULT_RISK_PER_TRADE_PCT = 1.0


class SizingMode(enum.IntEnum):
    """How a command's lot size is derived; values equal the proto's SizingMode."""

    RISK_PERCENT = 0          # equity x risk % / (SL distance x value per lot)
    FIXED_LOT = 1             # preferred_lot_size
    BALANCE_MULTIPLIER = 2    # sizing_value lots per 1,000 of balance
    EQUITY_MULTIPLIER = 3     # sizing_value lots per 1,000 of equity

    @property
    def needs_account(self) -> bool:
        """Every mode but FIXED_LOT reads the account's equity or balance."""
        return self is not SizingMode.FIXED_LOT


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
    sizing_value: float = 0.0                       # lots per 1,000 for the multipliers
    preferred_lot_size: float = 0.0
    max_risk_per_trade_pct: float = DEFAULT_RISK_PER_TRADE_PCT
    max_lot: float = 0.0                            # 0: the broker's volume_max
    conservative_mode: bool = False
    max_deviation_points: int = DEFAULT_MAX_DEVIATION_POINTS

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
    """The policy a ClientConfig describes; ``ValueError`` when it describes nonsense."""
    risk, prefs = config.risk, config.preferences
    try:
        sizing_mode = SizingMode(prefs.sizing_mode)
    except ValueError:
        raise ValueError(f"user {config.user_id}: unknown sizing mode {prefs.sizing_mode}") from None
    return UserPolicy(
        user_id=config.user_id,
        tier=_tier(config.tier),
        tier_name=config.tier_name,
        trading_symbols=frozenset(config.trading_symbols),
        allowed_symbols=frozenset(risk.allowed_symbols),
        paused=config.paused,
        close_only=config.close_only,
        max_spread_points=float(risk.max_spread_points),
        max_quote_age_ms=config.max_quote_age_ms or DEFAULT_MAX_QUOTE_AGE_MS,
        max_signal_age_ms=config.max_signal_age_ms,
        sizing_mode=sizing_mode,
        sizing_value=prefs.sizing_value,
        preferred_lot_size=prefs.preferred_lot_size,
        max_risk_per_trade_pct=risk.max_risk_per_trade or DEFAULT_RISK_PER_TRADE_PCT,
        max_lot=risk.max_lot,
        conservative_mode=prefs.conservative_mode,
        max_deviation_points=risk.max_deviation_points or DEFAULT_MAX_DEVIATION_POINTS,
    )


def _tier(value: int) -> SubscriptionTier:
    # The tier is informational here (the operator already cut the symbol set to it), so
    # an enum value from a newer operator is not worth refusing the user over.
    try:
        return SubscriptionTier(value)
    except ValueError:
        return SubscriptionTier.UNSPECIFIED


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

    @property
    def user_id(self) -> str:
        return self.policy.user_id
