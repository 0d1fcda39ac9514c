"""A user's ClientConfig as a checked, typed value: what the operator decided for the user
(effective symbols, tier limits, risk profile, preferences, pause, shard), read once per
change at the edge (``mt5fleet.proto.validation_config``) and shared by the workers and the
agent. No protobuf here. Numbers keep the wire's "0: not set" convention: each reader
supplies its own default or local fallback for a limit left at 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Self

from mt5fleet.proto.domain.trading import AccountType, SubscriptionTier


class SizingMode(enum.IntEnum):
    """How a command's lot size is derived; values equal the proto's SizingMode."""

    RISK_PERCENT = 0          # equity x risk % / (SL distance x value per lot)
    FIXED_LOT = 1             # preferred_lot_size
    BALANCE_MULTIPLIER = 2    # sizing_value lots per 1,000 USD of balance (converted from the account's)
    EQUITY_MULTIPLIER = 3     # sizing_value lots per 1,000 USD of equity

    @property
    def needs_account(self) -> bool:
        """Every mode but FIXED_LOT reads the account's equity or balance."""
        return self is not SizingMode.FIXED_LOT


@dataclass(frozen=True, slots=True)
class TierLimits:
    max_trading_pairs: int = 0            # 0: unlimited
    max_monitoring_pairs: int = 0         # 0: unlimited
    correlation_analysis: bool = False
    custom_pairs: bool = False
    max_payload_bytes: int = 0
    max_subscriptions: int = 0
    max_data_bytes: int = 0               # -1: unlimited
    max_price_batches_per_s: int = 0


@dataclass(frozen=True, slots=True)
class RiskProfile:
    max_risk_per_trade_pct: float = 0.0   # percent of equity (0-100); 0: the reader's default
    max_daily_loss: float = 0.0           # account currency; 0: no limit set
    max_drawdown: float = 0.0             # fraction of peak equity (0-1); 0: no limit set
    allow_news_trading: bool = False
    allowed_symbols: tuple[str, ...] = ()  # empty: every symbol of the effective set
    max_spread_points: int = 0            # 0: no cap
    max_lot: float = 0.0                  # 0: the broker's volume_max
    max_deviation_points: int = 0         # 0: the reader's default


@dataclass(frozen=True, slots=True)
class Preferences:
    preferred_lot_size: float = 0.0
    max_open_positions: int = 0           # 0: unlimited
    auto_close_friday: bool = False
    conservative_mode: bool = False
    sizing_mode: SizingMode = SizingMode.RISK_PERCENT
    sizing_value: float = 0.0             # lots per 1,000 USD for the multipliers


@dataclass(frozen=True, slots=True)
class SealedCredentials:
    """The MT5 login with its password sealed (AES-256-GCM) under the agent's key."""

    login: int
    server: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    key_id: str = ""
    algorithm: str = "AES-256-GCM"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    user_id: str
    tier_name: str = ""
    tier: SubscriptionTier = SubscriptionTier.UNSPECIFIED
    trading_symbols: tuple[str, ...] = ()
    correlation_symbols: tuple[str, ...] = ()
    monitoring_symbols: tuple[str, ...] = ()
    symbol_map: tuple[tuple[str, str], ...] = ()   # (canonical, broker name), sorted
    limits: TierLimits = TierLimits()
    risk: RiskProfile = RiskProfile()
    preferences: Preferences = Preferences()
    paused: bool = False
    close_only: bool = False
    max_quote_age_ms: int = 0              # 0: the reader's default
    max_signal_age_ms: int = 0             # 0: only the signal's expires_at counts
    credentials: SealedCredentials | None = None
    worker_shard: int = 0
    generation: int = 0
    updated_at_ms: int = 0
    broker_name: str = ""
    broker_server: str = ""
    account_type: AccountType = AccountType.UNSPECIFIED

    def evolve(self, **changes: object) -> Self:
        return replace(self, **changes)
