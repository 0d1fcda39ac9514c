"""Subscription tiers: how many symbols a user may trade and watch, whether correlation
pairs are chosen for it, which NATS limits its connection gets.

The defaults are SPEC §4; a platform overrides or adds tiers through the operator's
config (Helm values ``tiers:``), read by ``tiers_from_mapping``. Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

from mt5fleet.proto.domain.config import TierLimits
from mt5fleet.proto.domain.instruments import STANDARD_SYMBOLS
from mt5fleet.proto.domain.trading import SubscriptionTier

UNLIMITED = 0


@dataclass(frozen=True)
class Tier:
    name: str
    max_trading_pairs: int            # 0: unlimited
    max_monitoring_pairs: int         # 0: unlimited
    correlation_analysis: bool
    custom_pairs: bool
    max_correlation_pairs: int = 3    # correlation symbols chosen for the user
    max_payload_bytes: int = 64 * 1024
    max_subscriptions: int = 100
    max_data_bytes: int = -1          # NATS "data" limit per connection; -1: unlimited
    max_price_batches_per_s: int = 2

    def allows_symbol(self, symbol: str) -> bool:
        return self.custom_pairs or symbol in STANDARD_SYMBOLS

    @property
    def limits(self) -> TierLimits:
        """What the user's ClientConfig says about its tier."""
        return TierLimits(
            max_trading_pairs=self.max_trading_pairs, max_monitoring_pairs=self.max_monitoring_pairs,
            correlation_analysis=self.correlation_analysis, custom_pairs=self.custom_pairs,
            max_payload_bytes=self.max_payload_bytes, max_subscriptions=self.max_subscriptions,
            max_data_bytes=self.max_data_bytes, max_price_batches_per_s=self.max_price_batches_per_s)

    @property
    def subscription_tier(self) -> SubscriptionTier:
        return _SUBSCRIPTION_TIERS.get(self.name, SubscriptionTier.CUSTOM)


DEFAULT_TIERS: Mapping[str, Tier] = MappingProxyType({
    "free": Tier("free", 2, 4, correlation_analysis=False, custom_pairs=False, max_correlation_pairs=0,
                 max_payload_bytes=32 * 1024, max_subscriptions=50, max_data_bytes=64 * 1024 * 1024,
                 max_price_batches_per_s=1),
    "pro": Tier("pro", 5, 10, correlation_analysis=True, custom_pairs=False, max_correlation_pairs=5,
                max_payload_bytes=64 * 1024, max_subscriptions=100, max_data_bytes=512 * 1024 * 1024),
    "enterprise": Tier("enterprise", UNLIMITED, UNLIMITED, correlation_analysis=True, custom_pairs=True,
                       max_correlation_pairs=10, max_payload_bytes=256 * 1024, max_subscriptions=500,
                       max_data_bytes=-1, max_price_batches_per_s=10),
})

_SUBSCRIPTION_TIERS = {name: SubscriptionTier[name.upper()] for name in DEFAULT_TIERS}


class TierConfigError(ValueError):
    """A tier definition in the operator's config that cannot be used."""


def tiers_from_mapping(raw: Mapping[str, Any] | None, base: Mapping[str, Tier] = DEFAULT_TIERS) -> dict[str, Tier]:
    """Tiers from config: ``{name: {maxTradingPairs: 3, ...}}``; a known name overrides
    only what it names, a new name starts from the free tier's values."""
    tiers = dict(base)
    names = {_camel(f.name): f.name for f in fields(Tier) if f.name != "name"}
    for name, overrides in (raw or {}).items():
        if not isinstance(overrides, Mapping):
            raise TierConfigError(f"tiers.{name}: expected a mapping")
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TierConfigError(f"tiers.{name}: unknown setting(s) {', '.join(unknown)}")
        start = tiers.get(name) or replace(base["free"], name=name)
        values = {names[key]: _checked(name, key, value, getattr(start, names[key]))
                  for key, value in overrides.items()}
        tiers[name] = replace(start, name=name, **values)
    return tiers


def _checked(tier: str, key: str, value: Any, like: Any) -> Any:
    if isinstance(like, bool) != isinstance(value, bool) or not isinstance(value, type(like)):
        raise TierConfigError(f"tiers.{tier}.{key}: expected {type(like).__name__}, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and value < -1:
        raise TierConfigError(f"tiers.{tier}.{key}: must not be negative, got {value}")
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
