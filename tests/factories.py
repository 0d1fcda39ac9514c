"""Builders of valid protobuf messages for tests, one per inbound message kind.

Every builder returns a message that passes ``mt5fleet.proto.validation`` at ``NOW_MS``
with the default limits; keyword arguments override any field, so a test states only
what it is about::

    signal(order_type=SELL, stop_loss=1.0800)      # invalid: SL below entry for a sell
    price_batch(prices=[price(symbol="GBPUSD")])

Also the other signal builders, so there is one of each: ``fleet_signal`` (a live signal
on the 1.10000 reference the fleet tests' brokers quote around, for the adjust worker end to
end) and ``domain_signal`` (the validated ``Signal`` the pure adjustment core takes).

Import from a test module as ``from factories import signal`` (conftest puts this folder on
``sys.path``; tests run with ``--import-mode=importlib`` and there is no package ``tests``).
"""

from __future__ import annotations

from typing import Any

from mt5fleet.proto.domain.trading import CommandType, OrderType, Signal
from mt5fleet.proto.v1 import (
    account_pb2,
    commands_pb2,
    common_pb2,
    execution_pb2,
    heartbeat_pb2,
    market_data_pb2,
    prices_pb2,
    signals_pb2,
    symbols_pb2,
)

# 2023-11-14T22:13:20Z: a fixed "now"; the checks never read the clock.
NOW_MS = 1_700_000_000_000
USER_ID = "alice"

# EURUSD around 1.085, 5 digits, a 1.2-pip spread.
BID = 1.08500
ASK = 1.08512


def _build(message_type: type, defaults: dict[str, Any], overrides: dict[str, Any]) -> Any:
    return message_type(**{**defaults, **overrides})


def price(**overrides: Any) -> prices_pb2.ClientPrice:
    """One broker quote of EURUSD, 200 ms old."""
    return _build(prices_pb2.ClientPrice, dict(
        symbol="EURUSD", bid=BID, ask=ASK, spread=12.0, timestamp=NOW_MS - 200,
        broker_server="Broker-Demo", broker_symbol="EURUSD.m", digits=5,
    ), overrides)


def price_batch(prices: list[prices_pb2.ClientPrice] | None = None,
                **overrides: Any) -> prices_pb2.ClientPriceStream:
    """A batch sent 50 ms ago with EURUSD and GBPUSD unless ``prices`` is given."""
    if prices is None:
        prices = [price(), price(symbol="GBPUSD", bid=1.26500, ask=1.26515, spread=15.0,
                                 broker_symbol="GBPUSD.m")]
    return _build(prices_pb2.ClientPriceStream, dict(
        user_id=USER_ID, broker_name="Example Markets Ltd", account_number="5012345",
        prices=prices, batch_timestamp=NOW_MS - 50, sequence=42,
    ), overrides)


def signal(**overrides: Any) -> signals_pb2.UniversalSignal:
    """A market BUY of EURUSD on the reference feed: SL below, TP above the entry."""
    return _build(signals_pb2.UniversalSignal, dict(
        signal_id="sig-20231114-0001", symbol="EURUSD", order_type=commands_pb2.BUY,
        reference_bid=1.08490, reference_ask=1.08500, entry=1.08500, stop_loss=1.08000,
        take_profit=1.09500, confidence=0.8, created_at=NOW_MS - 1_000,
        expires_at=NOW_MS + 60_000, strategy="trend-follow", source="OANDA",
        action=commands_pb2.OPEN_POSITION, reason="breakout above the 50-bar high",
    ), overrides)


# The fleet tests' reference feed: their users' brokers quote EURUSD a few points around it.
FLEET_BID, FLEET_ASK = 1.10000, 1.10002


def fleet_signal(signal_id: str, now_ms: int, action: int = commands_pb2.OPEN_POSITION,
                 **overrides: Any) -> signals_pb2.UniversalSignal:
    """A EURUSD signal on the 1.10000/1.10002 reference, created at ``now_ms``, live two minutes.
    OPEN: a market BUY at the reference ask, SL 50 pips below, TP 100 pips above. CLOSE and
    MODIFY aim at the position of signal "sig-open"; CLOSE_ALL at the whole symbol."""
    fields: dict[str, Any] = dict(
        signal_id=signal_id, symbol="EURUSD", order_type=commands_pb2.BUY, reference_bid=FLEET_BID,
        reference_ask=FLEET_ASK, confidence=0.8, created_at=now_ms, expires_at=now_ms + 120_000,
        strategy="breakout", source="OANDA", action=action)
    if action == commands_pb2.OPEN_POSITION:
        fields.update(entry=FLEET_ASK, stop_loss=1.09502, take_profit=1.11002)
    elif action != commands_pb2.CLOSE_ALL:
        fields.update(target_signal_id="sig-open")
    return _build(signals_pb2.UniversalSignal, fields, overrides)


def domain_signal(**overrides: Any) -> Signal:
    """``signal()`` as the adjustment core takes it, validated: a market BUY of EURUSD on the
    reference feed at ``NOW_MS``, 50-pip SL, 100-pip TP, live ten minutes."""
    return _build(Signal, dict(
        signal_id="sig-1", symbol="EURUSD", action=CommandType.OPEN_POSITION, order_type=OrderType.BUY,
        reference_bid=1.08490, reference_ask=1.08500, entry=None, stop_loss=1.08000, take_profit=1.09500,
        confidence=0.8, created_at_ms=NOW_MS - 1_000, expires_at_ms=NOW_MS + 600_000, strategy="trend-follow",
        reason="breakout above the 50-bar high",
    ), overrides)


def command(**overrides: Any) -> commands_pb2.TradingCommand:
    """An OPEN market BUY of 0.10 lots of EURUSD, adjusted to the user's broker."""
    return _build(commands_pb2.TradingCommand, dict(
        command_id="sig-20231114-0001:alice", user_id=USER_ID,
        type=commands_pb2.OPEN_POSITION, symbol="EURUSD", order_type=commands_pb2.BUY,
        lot_size=0.10, entry_price=ASK, stop_loss=1.08012, take_profit=1.09512,
        reason="breakout above the 50-bar high", confidence_score=0.8,
        expires_at=NOW_MS + 30_000, original_entry=1.08500, price_adjustment=0.00012,
        adjustment_reason="broker ask 1.2 pips above reference", max_deviation_points=20,
        created_at=NOW_MS - 500, signal_id="sig-20231114-0001",
        signal_created_at=NOW_MS - 1_000, reference_price=1.08500, quote_bid=BID,
        quote_ask=ASK, quote_time=NOW_MS - 700,
    ), overrides)


def execution(**overrides: Any) -> execution_pb2.ExecutionReport:
    """The FILLED answer to ``command()``: 0.10 lots at 1.08514, 2 points worse."""
    return _build(execution_pb2.ExecutionReport, dict(
        command_id="sig-20231114-0001:alice", user_id=USER_ID,
        status=execution_pb2.EXECUTION_STATUS_FILLED, retcode=10009, ticket=880001,
        fill_price=1.08514, filled_volume=0.10, slippage_points=2.0,
        received_at=NOW_MS - 400, executed_at=NOW_MS - 300, reason="Request executed",
        symbol="EURUSD", command_type=commands_pb2.OPEN_POSITION,
        order_type=commands_pb2.BUY, signal_id="sig-20231114-0001",
        requested_price=ASK, reference_price=1.08500, slippage_reference_points=14.0,
        order_ticket=990001, deal_ticket=770001, command_created_at=NOW_MS - 500,
        signal_created_at=NOW_MS - 1_000, sequence=7,
    ), overrides)


def account(**overrides: Any) -> account_pb2.AccountProfile:
    """A live USD hedging account with one open position."""
    return _build(account_pb2.AccountProfile, dict(
        user_id=USER_ID, account_number="5012345", broker_name="Example Markets Ltd",
        server_name="Example-Live", account_type=common_pb2.ACCOUNT_TYPE_LIVE,
        base_currency="USD", balance=10_000.0, equity=10_025.5, margin_used=108.5,
        margin_free=9_917.0, timestamp=NOW_MS - 100, leverage=100, margin_level=9_240.1,
        profit=25.5, hedging=True, open_positions=1, day_start_equity=9_990.0,
        peak_equity=10_100.0, sequence=3,
    ), overrides)


def symbol_spec(**overrides: Any) -> symbols_pb2.SymbolSpec:
    """EURUSD as a 5-digit FX broker trades it."""
    return _build(symbols_pb2.SymbolSpec, dict(
        symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=0.00001,
        contract_size=100_000.0, tick_size=0.00001, tick_value=1.0, volume_min=0.01,
        volume_max=100.0, volume_step=0.01, stops_level=10, freeze_level=0, filling_modes=3,
        trade_mode=4, currency_base="EUR", currency_profit="USD", currency_margin="EUR",
        spread=12, trade_calc_mode=0,
    ), overrides)


def symbol_spec_list(specs: list[symbols_pb2.SymbolSpec] | None = None,
                     **overrides: Any) -> symbols_pb2.SymbolSpecList:
    """EURUSD and XAUUSD unless ``specs`` is given."""
    if specs is None:
        specs = [symbol_spec(), symbol_spec(
            symbol="XAUUSD", broker_symbol="GOLD", digits=2, point=0.01, contract_size=100.0,
            tick_size=0.01, tick_value=1.0, currency_base="XAU", currency_margin="XAU")]
    return _build(symbols_pb2.SymbolSpecList, dict(
        user_id=USER_ID, specs=specs, timestamp=NOW_MS - 100,
    ), overrides)


def heartbeat(**overrides: Any) -> heartbeat_pb2.Heartbeat:
    """A healthy agent, up for an hour."""
    return _build(heartbeat_pb2.Heartbeat, dict(
        user_id=USER_ID, agent_version="0.1.0", terminal_connected=True, trade_allowed=True,
        outbox_depth=0, last_publish_latency_ms=3.5, last_command_latency_ms=120.0,
        timestamp=NOW_MS - 20, session_id="4f1c2a9e", uptime_s=3_600, reconnects=1,
        price_staleness_ms=250.0, tick_rate=12.5, commands_executed=5, commands_rejected=1,
        mt5_errors=0, terminal_build="4410", p99_command_latency_ms=450.0,
    ), overrides)


def indicators(**overrides: Any) -> market_data_pb2.TechnicalIndicators:
    return _build(market_data_pb2.TechnicalIndicators, dict(
        sma_20=1.0848, sma_50=1.0840, ema_12=1.0849, ema_26=1.0845, macd_line=0.0004,
        macd_signal=0.0003, rsi=58.0, bollinger_upper=1.0870, bollinger_middle=1.0848,
        bollinger_lower=1.0826,
    ), overrides)


def market_data(**overrides: Any) -> market_data_pb2.ClientMarketData:
    """EURUSD reference data with indicators, the London session and one correlation."""
    return _build(market_data_pb2.ClientMarketData, dict(
        symbol="EURUSD", bid=1.08490, ask=1.08500, timestamp=NOW_MS - 300,
        user_tier=common_pb2.SUBSCRIPTION_TIER_FREE, indicators=indicators(),
        session=common_pb2.MarketSession(is_open=True, active_sessions=["london"],
                                         next_close=NOW_MS + 86_400_000),
        correlations=[market_data_pb2.SymbolCorrelation(
            symbol_a="EURUSD", symbol_b="GBPUSD", coefficient=0.87, window=120,
            computed_at=NOW_MS - 60_000)],
        bar_time=NOW_MS - 60_000,
    ), overrides)
