"""The agent's own risk rules refuse what they should, whatever the server sent."""

from __future__ import annotations

import asyncio
import datetime as dt

from agent_harness import SATURDAY, AgentHarness, open_positions
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import ManualClock
from mt5fleet.proto.v1 import commands_pb2, config_pb2, execution_pb2

REJECTED = execution_pb2.EXECUTION_STATUS_REJECTED
FILLED = execution_pb2.EXECUTION_STATUS_FILLED


async def _refusal(h: AgentHarness, command: commands_pb2.TradingCommand) -> execution_pb2.ExecutionReport:
    await h.send(command)
    report = await h.report(command.command_id)
    assert report.status == REJECTED, report
    return report


async def test_symbol_outside_the_trading_set(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        report = await _refusal(h, h.command(symbol="USDJPY"))  # monitored, not traded
        assert report.reject_code == "symbol_not_allowed" and not open_positions(h.sim)


async def test_max_open_positions(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path, risk={"max_open_positions": 1}) as h:
        first = h.command()
        await h.send(first)
        assert (await h.report(first.command_id)).status == FILLED
        report = await _refusal(h, h.command(symbol="GBPUSD"))
        assert report.reject_code == "max_open_positions" and len(open_positions(h.sim)) == 1


async def test_max_risk_per_trade(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path, risk={"max_risk_per_trade_pct": 1.0}) as h:
        report = await _refusal(h, h.command(lot_size=20.0))  # 50 pips on 20 lots: far over 1% of equity
        assert report.reject_code == "max_risk_per_trade" and "%" in report.reason


async def test_max_spread(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path, risk={"max_spread_points": 1}) as h:
        assert (await _refusal(h, h.command())).reject_code == "max_spread"


async def test_market_closed_at_the_weekend(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path, start=SATURDAY) as h:
        assert (await _refusal(h, h.command())).reject_code == "market_closed"


async def test_paused_then_close_only_from_the_live_config(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        opened = h.command()
        await h.send(opened)
        assert (await h.report(opened.command_id)).status == FILLED
        kv = await h.js.key_value(subjects.CONFIG_BUCKET)
        config = config_pb2.ClientConfig(user_id="alice", tier_name="pro", trading_symbols=["EURUSD", "GBPUSD"],
                                         paused=True)
        await kv.put("alice", config.SerializeToString())
        await wait_for(lambda: h.agent.effective.limits.paused, "pause applied")
        assert (await _refusal(h, h.command())).reject_code == "paused"
        config.paused, config.close_only = False, True
        await kv.put("alice", config.SerializeToString())
        await wait_for(lambda: h.agent.effective.limits.close_only, "close-only applied")
        assert (await _refusal(h, h.command())).reject_code == "close_only"
        close = h.command(type=commands_pb2.CLOSE_POSITION, target_command_id=opened.command_id, lot_size=0,
                          entry_price=0, stop_loss=0, take_profit=0)
        await h.send(close)
        assert (await h.report(close.command_id)).status == FILLED  # reducing risk stays allowed
        assert not open_positions(h.sim)


async def test_daily_loss_stop_out_closes_everything_and_blocks_new_positions(fresh_nats_server, tmp_path):
    # Opening costs the spread at once: with a one-cent daily loss limit that is a breach.
    async with AgentHarness(fresh_nats_server, tmp_path, risk={"max_daily_loss": 0.01}) as h:
        opened = h.command(lot_size=1.0)
        await h.send(opened)
        assert (await h.report(opened.command_id)).status == FILLED
        await wait_for(lambda: not open_positions(h.sim), "stop-out closed the position", timeout=10)
        # The report follows the close through JetStream: wait for it, do not race it.
        await wait_for(lambda: any(r.command_type == commands_pb2.CLOSE_ALL and r.status == FILLED
                                   for r in h.reports), "close-all reported")
        assert h.agent.marks.stop_out.is_active(h.now_ms())
        report = await _refusal(h, h.command())
        assert report.reject_code in ("stopped_out", "daily_loss")


async def test_auto_close_before_the_weekend_when_the_user_asked(fresh_nats_server, tmp_path):
    clock = ManualClock(dt.datetime(2026, 11, 20, 21, 40, tzinfo=dt.UTC).timestamp())  # Friday 16:40 New York
    async with AgentHarness(fresh_nats_server, tmp_path, clock=clock) as h:
        opened = h.command()
        await h.send(opened)
        assert (await h.report(opened.command_id)).status == FILLED
        # The agent checks every 10 ms on a manual clock: 0.3 s is some 30 checks that must not close.
        await asyncio.sleep(0.3)
        assert len(open_positions(h.sim)) == 1  # 20 minutes before the close, and not asked
        kv = await h.js.key_value(subjects.CONFIG_BUCKET)
        config = config_pb2.ClientConfig(user_id="alice", tier_name="pro", trading_symbols=["EURUSD"])
        config.preferences.auto_close_friday = True
        await kv.put("alice", config.SerializeToString())
        await wait_for(lambda: h.agent.effective.auto_close_friday, "the auto-close preference applied")
        await asyncio.sleep(0.3)
        assert len(open_positions(h.sim)) == 1  # asked, but 20 minutes before the close: not yet
        clock.advance(6 * 60)  # 16:46 New York: inside the 15-minute lead
        await wait_for(lambda: not open_positions(h.sim), "positions closed before the weekend")
        # The report follows the close through JetStream: wait for it, do not race it.
        await wait_for(lambda: any(r.command_type == commands_pb2.CLOSE_ALL for r in h.reports), "close-all reported")
        closing = [r for r in h.reports if r.command_type == commands_pb2.CLOSE_ALL]
        assert len(closing) == 1 and closing[0].status == FILLED
