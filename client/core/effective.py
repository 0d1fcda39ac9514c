"""What the agent enforces right now: the operator's ClientConfig when it has arrived,
the local config file's fallbacks until then. Pure: no I/O, no protobuf (the ClientConfig
arrives as the typed value the edge reader ``check_client_config`` built)."""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.client.core.risk import RiskLimits
from mt5fleet.client.core.settings import LocalRiskLimits, SymbolSettings
from mt5fleet.proto.domain.config import ClientConfig


@dataclass(frozen=True)
class EffectiveConfig:
    tier: str
    trading_symbols: tuple[str, ...]
    correlation_symbols: tuple[str, ...]
    monitoring_symbols: tuple[str, ...]
    symbol_overrides: tuple[tuple[str, str], ...]
    limits: RiskLimits
    max_deviation_points: int
    auto_close_friday: bool
    from_server: bool
    generation: int = 0

    @property
    def streamed_symbols(self) -> tuple[str, ...]:
        """Every symbol whose quotes the agent streams, trading ones first, no repeats."""
        return tuple(dict.fromkeys(self.trading_symbols + self.correlation_symbols + self.monitoring_symbols))

    @property
    def md_symbols(self) -> tuple[str, ...]:
        """The symbols whose ``md.<symbol>`` the agent reads: the ClientConfig's trading,
        correlation and monitoring symbols, the very set the operator grants
        (``operator.core.reconcile.desired_state``); none from the local file's fallbacks,
        which no grant covers."""
        return self.streamed_symbols if self.from_server else ()


def from_local_settings(local: LocalRiskLimits, symbols: SymbolSettings) -> EffectiveConfig:
    trading = tuple(symbols.trading)
    limits = RiskLimits(
        trading_symbols=trading, max_risk_per_trade_pct=local.max_risk_per_trade_pct,
        max_daily_loss=local.max_daily_loss, max_drawdown=local.max_drawdown,
        max_open_positions=local.max_open_positions, max_spread_points=local.max_spread_points,
        allowed_symbols=frozenset(local.allowed_symbols),
    )
    return EffectiveConfig(
        tier="local", trading_symbols=trading, correlation_symbols=(),
        monitoring_symbols=tuple(symbols.monitoring),
        symbol_overrides=tuple(sorted(symbols.symbol_map.items())), limits=limits,
        max_deviation_points=local.max_deviation_points, auto_close_friday=False, from_server=False,
    )


def from_client_config(config: ClientConfig, local: LocalRiskLimits, symbols: SymbolSettings) -> EffectiveConfig:
    """The server's limits win; a limit it leaves at 0 falls back to the local file's, so a
    half-filled ClientConfig never switches a protection off."""
    risk, prefs = config.risk, config.preferences
    trading = tuple(config.trading_symbols)
    limits = RiskLimits(
        trading_symbols=trading,
        max_risk_per_trade_pct=risk.max_risk_per_trade_pct or local.max_risk_per_trade_pct,
        max_daily_loss=risk.max_daily_loss or local.max_daily_loss,
        max_drawdown=risk.max_drawdown or local.max_drawdown,
        max_open_positions=prefs.max_open_positions or local.max_open_positions,
        max_spread_points=risk.max_spread_points or local.max_spread_points,
        allowed_symbols=frozenset(risk.allowed_symbols or local.allowed_symbols),
        paused=config.paused, close_only=config.close_only, allow_news_trading=risk.allow_news_trading,
        broker_name=config.broker_name, broker_server=config.broker_server,
    )
    overrides = {**symbols.symbol_map, **dict(config.symbol_map)}
    return EffectiveConfig(
        tier=config.tier_name or "unknown", trading_symbols=trading,
        correlation_symbols=tuple(config.correlation_symbols), monitoring_symbols=tuple(config.monitoring_symbols),
        symbol_overrides=tuple(sorted(overrides.items())), limits=limits,
        max_deviation_points=risk.max_deviation_points or local.max_deviation_points,
        auto_close_friday=prefs.auto_close_friday, from_server=True, generation=config.generation,
    )
