"""Validation at the edge for server-computed market data: ClientMarketData on
md.<symbol>, which agents read, and the CorrelationSnapshot the operator reads.
Same contract as ``validation``, which re-exports it: every violation is listed in one
ValidationError.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from mt5fleet.proto.domain.correlations import Pair, pair_key
from mt5fleet.proto.domain.market import Correlation, Indicators, MarketData, Session
from mt5fleet.proto.domain.trading import SubscriptionTier
from mt5fleet.proto.v1.common_pb2 import MarketSession
from mt5fleet.proto.v1.market_data_pb2 import (
    ClientMarketData,
    CorrelationSnapshot,
    SymbolCorrelation,
    TechnicalIndicators,
)
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS, Checks, Limits


def check_market_data(msg: ClientMarketData, now_ms: int,
                      limits: Limits = DEFAULT_LIMITS) -> MarketData:
    checks = Checks(now_ms, limits)
    checks.symbol("symbol", msg.symbol)
    checks.price("bid", msg.bid)
    checks.price("ask", msg.ask)
    checks.bid_ask(msg.bid, msg.ask)
    checks.timestamp("timestamp", msg.timestamp)
    checks.timestamp("bar_time", msg.bar_time, optional=True)
    checks.enum("user_tier", msg.user_tier, SubscriptionTier)
    checks.merge(_check_indicators(checks.nested("indicators"), msg.indicators))
    checks.merge(_check_session(checks.nested("session"), msg.session))
    if len(msg.correlations) > limits.max_correlations:
        checks.add("correlations", f"{len(msg.correlations)} correlations, more than the "
                                   f"{limits.max_correlations} allowed")
    else:
        for index, corr in enumerate(msg.correlations):
            checks.merge(_check_correlation(checks.nested(f"correlations[{index}]"), corr))
    checks.raise_if_any("ClientMarketData")
    return _market_data(msg)


def check_correlation_snapshot(msg: CorrelationSnapshot, now_ms: int,
                               limits: Limits = DEFAULT_LIMITS) -> dict[Pair, float]:
    """The matrix a published snapshot (``analytics.correlations``) carries, keyed (a, b)
    with a < b; a snapshot with any bad pair is refused whole (one producer, the workers)."""
    checks = Checks(now_ms, limits)
    checks.timestamp("computed_at", msg.computed_at, optional=True)
    for index, corr in enumerate(msg.pairs):
        checks.merge(_check_correlation(checks.nested(f"pairs[{index}]"), corr))
    checks.raise_if_any("CorrelationSnapshot")
    return {pair_key(p.symbol_a, p.symbol_b): p.coefficient for p in msg.pairs}


def _check_indicators(checks: Checks, ind: TechnicalIndicators) -> Checks:
    # Moving averages and bands are prices, 0 until their window is full.
    for field in ("sma_20", "sma_50", "ema_12", "ema_26", "bollinger_upper", "bollinger_middle"):
        checks.price(field, getattr(ind, field), optional=True)
    for field in ("macd_line", "macd_signal", "bollinger_lower"):
        checks.finite(field, getattr(ind, field))
    checks.in_range("rsi", ind.rsi, 0.0, 100.0)
    if ind.bollinger_middle > 0 and not (
            ind.bollinger_upper >= ind.bollinger_middle >= ind.bollinger_lower):
        checks.add("bollinger_middle", f"bands out of order: upper {ind.bollinger_upper!r}, "
                                       f"middle {ind.bollinger_middle!r}, "
                                       f"lower {ind.bollinger_lower!r}")
    return checks


def _check_session(checks: Checks, session: MarketSession) -> Checks:
    if len(session.active_sessions) > checks.limits.max_sessions:
        checks.add("active_sessions", f"{len(session.active_sessions)} sessions, more than "
                                      f"{checks.limits.max_sessions}")
    for index, name in enumerate(session.active_sessions[: checks.limits.max_sessions]):
        checks.ident(f"active_sessions[{index}]", name)
    checks.non_negative("next_open", session.next_open)
    checks.non_negative("next_close", session.next_close)
    return checks


def _check_correlation(checks: Checks, corr: SymbolCorrelation) -> Checks:
    checks.symbol("symbol_a", corr.symbol_a)
    checks.symbol("symbol_b", corr.symbol_b)
    checks.in_range("coefficient", corr.coefficient, -1.0, 1.0)
    checks.non_negative("window", corr.window)
    checks.timestamp("computed_at", corr.computed_at, optional=True)
    return checks


def _market_data(msg: ClientMarketData) -> MarketData:
    ind, session = msg.indicators, msg.session
    return MarketData(
        symbol=msg.symbol, bid=msg.bid, ask=msg.ask, time_ms=msg.timestamp,
        tier=SubscriptionTier(msg.user_tier),
        indicators=Indicators(**{f.name: getattr(ind, f.name) for f in fields(Indicators)}),
        session=Session(
            is_open=session.is_open, in_rollover=session.in_rollover,
            active_sessions=tuple(session.active_sessions),
            next_open_ms=session.next_open or None, next_close_ms=session.next_close or None),
        correlations=tuple(_correlations(msg.correlations)),
        bar_time_ms=msg.bar_time or None)


def _correlations(items: Iterable[SymbolCorrelation]) -> Iterable[Correlation]:
    for corr in items:
        yield Correlation(symbol_a=corr.symbol_a, symbol_b=corr.symbol_b,
                          coefficient=corr.coefficient, window=corr.window,
                          computed_at_ms=corr.computed_at or None)
