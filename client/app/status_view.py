"""The status page's view of a running agent: read from what the agent already holds,
never from the terminal (the page must not queue behind MT5 calls)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mt5fleet.client.adapters.status import (
    AgentStatus,
    CatchupRow,
    ClockRow,
    CommandRow,
    HealthRow,
    IndicatorRow,
    QuoteRow,
    ServerTime,
)
from mt5fleet.client.app.outcomes import Handled
from mt5fleet.client.core.risk_view import risk_state
from mt5fleet.proto.domain.clock import now_ms

if TYPE_CHECKING:
    from mt5fleet.client.app.agent import Agent


def agent_status(agent: Agent) -> AgentStatus:
    now = now_ms(agent.clock)
    account = agent.streams.account
    quotes = tuple(
        QuoteRow(q.symbol, q.broker_symbol, q.bid, q.ask, int(q.spread), max(now - q.timestamp, 0) / 1000)
        for q in sorted(agent.streams.latest.values(), key=lambda q: q.symbol))
    commands = tuple(_command_row(h) for h in agent.pipeline.recent)
    indicators = tuple(_indicator_row(d) for d in sorted(agent.market_data.latest.values(), key=lambda d: d.symbol))
    nats = agent.nc
    offset = agent.terminal.server_clock.offset
    server_time = ServerTime(offset.offset_at(now), offset.rule.value, offset.source.value, offset.at_ms,
                             offset.label(now))
    return AgentStatus(
        user_id=agent.user_id, version=agent.version,
        nats_connected=bool(nats and nats.is_connected),
        nats_server=nats.connected_url.netloc if nats is not None and nats.connected_url else "",
        terminal_connected=agent.terminal.connected,
        broker=f"{account.company} / {account.server}" if account else "",
        currency=account.currency if account else "", balance=account.balance if account else 0.0,
        equity=account.equity if account else 0.0, margin_free=account.margin_free if account else 0.0,
        outbox_depth=agent.outbox.depth(), reconnects=agent.reconnects, tier=agent.config.effective.tier,
        trading_symbols=agent.config.effective.trading_symbols, quotes=quotes, positions=agent.streams.position_rows,
        commands=commands, indicators=indicators, server_time=server_time, charts=agent.streams.charts,
        notes=agent.chart_keeper.notes,
        risk=risk_state(agent.marks, agent.config.effective.limits, equity=account.equity if account else 0.0,
                        now_ms=now) if account else None,
        **_health(agent))


def _command_row(h: Handled) -> CommandRow:
    f = h.facts
    return CommandRow(h.command_id, h.type, h.symbol, h.status, h.reason, h.fill_price, h.slippage_points, h.at_ms,
                      order_type=h.order_type, lots=f.lots, lot_why=f.lot_why, sizing_reason=f.sizing_reason,
                      filled_volume=h.filled_volume,
                      reference_entry=f.reference_entry, adjusted_entry=f.adjusted_entry, adjustment=f.adjustment,
                      adjustment_reason=f.adjustment_reason, slippage_reference_points=h.slippage_reference_points,
                      latency_ms=h.latency_ms)


def _indicator_row(data: Any) -> IndicatorRow:
    i = data.indicators
    return IndicatorRow(data.symbol, i.sma_20, i.ema_12, i.rsi, i.macd_line, data.session.is_open, sma_50=i.sma_50,
                        ema_26=i.ema_26, macd_signal=i.macd_signal, bollinger_upper=i.bollinger_upper,
                        bollinger_lower=i.bollinger_lower)


def _health(agent: Agent) -> dict:
    """Readiness, liveness and what the agent is waiting for, as the status page shows them."""
    health = agent.health
    catchup = agent.catchup.status(time.monotonic())
    skew = agent.terminal.server_clock.skew.skew()
    blocked = agent.pipeline.blocked
    return dict(
        ready=health.ready, alive=health.alive,
        not_ready=tuple(HealthRow(f.reason, f.detail, f.for_s) for f in health.findings(health.not_ready)),
        wedged=tuple(HealthRow(f.reason, f.detail, f.for_s) for f in health.findings(health.wedged)),
        catchup=CatchupRow(catchup.state, catchup.attempts, catchup.error, catchup.failing_for_s, catchup.since_ms,
                           catchup.done_at_ms),
        commands_held=agent.pipeline.held, held_for=f"{blocked.kind.value}: {blocked.detail}" if blocked else "",
        clock=ClockRow(None if skew.measured_ms is None else skew.measured_ms / 1000, skew.correction_ms / 1000,
                       skew.samples, skew.at_ms))
