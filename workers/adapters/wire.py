"""The workers' outbound edge: domain values -> the protobuf messages they publish.

The cores compute commands, bars, indicators and correlations as domain values; this is the
one module that turns them into wire messages (inbound messages are decoded and checked by
``mt5fleet.proto.validation``). Wire conventions: a domain ``None`` becomes the field's
"none" value (0 or empty), and a field is left unset exactly when it used to be, so the
bytes on the wire do not depend on which side of this edge a value was built.
"""

from __future__ import annotations

from collections.abc import Iterable

from mt5fleet.proto.domain.market import Correlation, Indicators, MarketData, Session
from mt5fleet.proto.domain.sessions import MarketState
from mt5fleet.proto.domain.trading import Command
from mt5fleet.proto.v1 import common_pb2, market_data_pb2
from mt5fleet.proto.v1.commands_pb2 import TradingCommand
from mt5fleet.workers.core.bars import Bar


def command_message(command: Command) -> TradingCommand:
    """The wire form of one user's adjusted command."""
    return TradingCommand(
        command_id=command.command_id, user_id=command.user_id, type=int(command.type),
        symbol=command.symbol or "", order_type=int(command.order_type), lot_size=command.lot_size,
        entry_price=command.entry_price or 0.0, stop_loss=command.stop_loss or 0.0,
        take_profit=command.take_profit or 0.0, reason=command.reason, confidence_score=command.confidence,
        expires_at=command.expires_at_ms, original_entry=command.original_entry or 0.0,
        price_adjustment=command.price_adjustment, adjustment_reason=command.adjustment_reason,
        position_ticket=command.position_ticket or 0, target_command_id=command.target_command_id or "",
        max_deviation_points=command.max_deviation_points, created_at=command.created_at_ms,
        signal_id=command.signal_id or "", signal_created_at=command.signal_created_at_ms or 0,
        reference_price=command.reference_price or 0.0, quote_bid=command.quote_bid or 0.0,
        quote_ask=command.quote_ask or 0.0, quote_time=command.quote_time_ms or 0,
        sizing_reason=command.sizing_reason)


def bar_message(bar: Bar) -> market_data_pb2.OHLCVBar:
    return market_data_pb2.OHLCVBar(
        symbol=bar.symbol, timeframe=bar.timeframe_s, open_time=bar.open_time_ms, open=bar.open, high=bar.high,
        low=bar.low, close=bar.close, tick_volume=bar.tick_volume, real_volume=0.0, spread=bar.spread)


def indicators_message(values: Indicators) -> market_data_pb2.TechnicalIndicators:
    return market_data_pb2.TechnicalIndicators(
        sma_20=values.sma_20, sma_50=values.sma_50, ema_12=values.ema_12, ema_26=values.ema_26,
        macd_line=values.macd_line, macd_signal=values.macd_signal, rsi=values.rsi,
        bollinger_upper=values.bollinger_upper, bollinger_middle=values.bollinger_middle,
        bollinger_lower=values.bollinger_lower)


def session_message(state: MarketState | Session) -> common_pb2.MarketSession:
    """The FX session at one instant; ``MarketState`` says 0 where ``Session`` says None."""
    return common_pb2.MarketSession(is_open=state.is_open, in_rollover=state.in_rollover,
                                    active_sessions=list(state.active_sessions),
                                    next_open=state.next_open_ms or 0, next_close=state.next_close_ms or 0)


def correlation_message(pair: Correlation) -> market_data_pb2.SymbolCorrelation:
    return market_data_pb2.SymbolCorrelation(symbol_a=pair.symbol_a, symbol_b=pair.symbol_b,
                                             coefficient=pair.coefficient, window=pair.window,
                                             computed_at=pair.computed_at_ms or 0)


def correlation_snapshot_message(pairs: Iterable[Correlation],
                                 computed_at_ms: int) -> market_data_pb2.CorrelationSnapshot:
    return market_data_pb2.CorrelationSnapshot(pairs=[correlation_message(pair) for pair in pairs],
                                               computed_at=computed_at_ms)


def market_data_message(data: MarketData, *, with_indicators: bool = True) -> market_data_pb2.ClientMarketData:
    """One symbol's market data. Before a symbol's first closed bar it has no indicators
    at all (``with_indicators=False``): the field is then left unset, as it always was on
    the wire, rather than sent as a set of zeros."""
    message = market_data_pb2.ClientMarketData(
        symbol=data.symbol, bid=data.bid, ask=data.ask, timestamp=data.time_ms, user_tier=int(data.tier),
        session=session_message(data.session), correlations=[correlation_message(c) for c in data.correlations],
        bar_time=data.bar_time_ms or 0)
    if with_indicators:
        message.indicators.CopyFrom(indicators_message(data.indicators))
    return message
