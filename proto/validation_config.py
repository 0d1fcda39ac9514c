"""The edge for ClientConfig (KV ``tc-config``): decode once per change into the typed
``mt5fleet.proto.domain.config.ClientConfig``, with every violation listed in one
ValidationError, and the one encoder the operator writes it with.

A config is refused whole: a half-understood set of risk limits is worse than the last good
one, which the reader keeps. ``key`` is the KV key the entry was read under: a config
stored under another user's key is refused (it would size one user's trades on another's
settings).
"""

from __future__ import annotations

from mt5fleet.proto.domain.config import (
    ClientConfig,
    Preferences,
    RiskProfile,
    SealedCredentials,
    SizingMode,
    TierLimits,
)
from mt5fleet.proto.domain.trading import AccountType, SubscriptionTier
from mt5fleet.proto.subjects import ADJUST_PARTITIONS
from mt5fleet.proto.v1 import account_pb2, config_pb2
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS, Checks, Limits

MAX_SYMBOLS = 1_000
_BROKER_NAME_CHARS = 32


def check_client_config(msg: config_pb2.ClientConfig, now_ms: int, *, key: str | None = None,
                        limits: Limits = DEFAULT_LIMITS) -> ClientConfig:
    checks = Checks(now_ms, limits)
    if checks.user_id("user_id", msg.user_id) and key is not None and msg.user_id != key:
        checks.add("user_id", f"user_id {msg.user_id!r} is stored under the key of {key!r}")
    for name in ("trading_symbols", "correlation_symbols", "monitoring_symbols"):
        _symbols(checks, name, getattr(msg, name))
    for canonical, broker in msg.symbol_map.items():
        checks.symbol(f"symbol_map[{canonical}]", canonical)
        checks.text(f"symbol_map[{canonical}]", broker, required=True)
        if len(broker) > _BROKER_NAME_CHARS:
            checks.add(f"symbol_map[{canonical}]", f"broker symbol name of {len(broker)} characters")
    checks.merge(_risk(checks.nested("risk"), msg.risk))
    checks.merge(_preferences(checks.nested("preferences"), msg.preferences))
    checks.non_negative("max_quote_age_ms", msg.max_quote_age_ms)
    checks.non_negative("max_signal_age_ms", msg.max_signal_age_ms)
    checks.in_range("worker_shard", msg.worker_shard, 0, ADJUST_PARTITIONS - 1)
    checks.non_negative("generation", msg.generation)
    # When the operator last wrote the entry (possibly months ago) on the operator's clock (a
    # trader's PC may be minutes off): a record, never acted on, so neither age nor skew
    # is a reason to refuse the config.
    checks.non_negative("updated_at", msg.updated_at)
    checks.enum("account_type", msg.account_type, AccountType)
    if msg.HasField("mt5_credentials") and not msg.mt5_credentials.ciphertext:
        checks.add("mt5_credentials.ciphertext", "sealed credentials without a ciphertext")
    checks.raise_if_any("ClientConfig")
    return _config(msg)


def _symbols(checks: Checks, name: str, values: object) -> None:
    values = list(values)  # type: ignore[call-overload]
    if len(values) > MAX_SYMBOLS:
        checks.add(name, f"{len(values)} symbols, more than {MAX_SYMBOLS}")
        return
    for index, symbol in enumerate(values):
        checks.symbol(f"{name}[{index}]", symbol)


def _risk(checks: Checks, risk: account_pb2.RiskProfile) -> Checks:
    checks.in_range("max_risk_per_trade", risk.max_risk_per_trade, 0.0, 100.0)
    checks.amount("max_daily_loss", risk.max_daily_loss, non_negative=True)
    checks.in_range("max_drawdown", risk.max_drawdown, 0.0, 1.0)
    _symbols(checks, "allowed_symbols", risk.allowed_symbols)
    checks.non_negative("max_spread_points", risk.max_spread_points)
    checks.lots("max_lot", risk.max_lot, required=False)
    checks.non_negative("max_deviation_points", risk.max_deviation_points)
    return checks


def _preferences(checks: Checks, prefs: account_pb2.TradingPreferences) -> Checks:
    checks.lots("preferred_lot_size", prefs.preferred_lot_size, required=False)
    checks.non_negative("max_open_positions", prefs.max_open_positions)
    checks.enum("sizing_mode", prefs.sizing_mode, SizingMode)
    checks.non_negative("sizing_value", prefs.sizing_value)
    return checks


def _tier(value: int) -> SubscriptionTier:
    # The tier is informational past the operator (it already cut the symbol set to it), so
    # an enum value from a newer operator is not worth refusing the user over.
    try:
        return SubscriptionTier(value)
    except ValueError:
        return SubscriptionTier.UNSPECIFIED


def _config(msg: config_pb2.ClientConfig) -> ClientConfig:
    risk, prefs, lim = msg.risk, msg.preferences, msg.limits
    sealed = msg.mt5_credentials if msg.HasField("mt5_credentials") else None
    return ClientConfig(
        user_id=msg.user_id, tier_name=msg.tier_name, tier=_tier(msg.tier),
        trading_symbols=tuple(msg.trading_symbols), correlation_symbols=tuple(msg.correlation_symbols),
        monitoring_symbols=tuple(msg.monitoring_symbols), symbol_map=tuple(sorted(msg.symbol_map.items())),
        limits=TierLimits(
            max_trading_pairs=lim.max_trading_pairs, max_monitoring_pairs=lim.max_monitoring_pairs,
            correlation_analysis=lim.correlation_analysis, custom_pairs=lim.custom_pairs,
            max_payload_bytes=lim.max_payload_bytes, max_subscriptions=lim.max_subscriptions,
            max_data_bytes=lim.max_data_bytes, max_price_batches_per_s=lim.max_price_batches_per_s),
        risk=RiskProfile(
            max_risk_per_trade_pct=risk.max_risk_per_trade, max_daily_loss=risk.max_daily_loss,
            max_drawdown=risk.max_drawdown, allow_news_trading=risk.allow_news_trading,
            allowed_symbols=tuple(risk.allowed_symbols), max_spread_points=risk.max_spread_points,
            max_lot=risk.max_lot, max_deviation_points=risk.max_deviation_points),
        preferences=Preferences(
            preferred_lot_size=prefs.preferred_lot_size, max_open_positions=prefs.max_open_positions,
            auto_close_friday=prefs.auto_close_friday, conservative_mode=prefs.conservative_mode,
            sizing_mode=SizingMode(prefs.sizing_mode), sizing_value=prefs.sizing_value),
        paused=msg.paused, close_only=msg.close_only,
        max_quote_age_ms=msg.max_quote_age_ms, max_signal_age_ms=msg.max_signal_age_ms,
        credentials=None if sealed is None else SealedCredentials(
            login=sealed.login, server=sealed.server, nonce=bytes(sealed.nonce),
            ciphertext=bytes(sealed.ciphertext), key_id=sealed.key_id,
            algorithm=sealed.algorithm or "AES-256-GCM"),
        worker_shard=msg.worker_shard, generation=msg.generation, updated_at_ms=msg.updated_at,
        broker_name=msg.broker_name, broker_server=msg.broker_server,
        account_type=AccountType(msg.account_type))


def client_config_message(config: ClientConfig) -> config_pb2.ClientConfig:
    """The wire form the operator writes to ``tc-config``."""
    risk, prefs, lim = config.risk, config.preferences, config.limits
    msg = config_pb2.ClientConfig(
        user_id=config.user_id, tier_name=config.tier_name, tier=int(config.tier),
        trading_symbols=config.trading_symbols, correlation_symbols=config.correlation_symbols,
        monitoring_symbols=config.monitoring_symbols, symbol_map=dict(config.symbol_map),
        limits=config_pb2.TierLimits(
            max_trading_pairs=lim.max_trading_pairs, max_monitoring_pairs=lim.max_monitoring_pairs,
            correlation_analysis=lim.correlation_analysis, custom_pairs=lim.custom_pairs,
            max_payload_bytes=lim.max_payload_bytes, max_subscriptions=lim.max_subscriptions,
            max_data_bytes=lim.max_data_bytes, max_price_batches_per_s=lim.max_price_batches_per_s),
        risk=account_pb2.RiskProfile(
            max_risk_per_trade=risk.max_risk_per_trade_pct, max_daily_loss=risk.max_daily_loss,
            max_drawdown=risk.max_drawdown, allow_news_trading=risk.allow_news_trading,
            allowed_symbols=risk.allowed_symbols, max_spread_points=risk.max_spread_points,
            max_lot=risk.max_lot, max_deviation_points=risk.max_deviation_points),
        preferences=account_pb2.TradingPreferences(
            preferred_lot_size=prefs.preferred_lot_size, max_open_positions=prefs.max_open_positions,
            auto_close_friday=prefs.auto_close_friday, conservative_mode=prefs.conservative_mode,
            sizing_mode=int(prefs.sizing_mode), sizing_value=prefs.sizing_value),
        paused=config.paused, close_only=config.close_only,
        max_quote_age_ms=config.max_quote_age_ms, max_signal_age_ms=config.max_signal_age_ms,
        worker_shard=config.worker_shard, generation=config.generation, updated_at=config.updated_at_ms,
        broker_name=config.broker_name, broker_server=config.broker_server,
        account_type=int(config.account_type))
    if config.credentials is not None:
        sealed = config.credentials
        msg.mt5_credentials.CopyFrom(config_pb2.EncryptedCredentials(
            login=sealed.login, server=sealed.server, nonce=sealed.nonce, ciphertext=sealed.ciphertext,
            key_id=sealed.key_id, algorithm=sealed.algorithm))
    return msg
