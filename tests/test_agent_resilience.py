"""What the agent guarantees when things break: nothing lost through a NATS outage, no
trade twice after a crash between order_send and the acknowledgement."""

from __future__ import annotations

import asyncio
import logging

import pytest
from agent_harness import QUICK_HEALTH, WEDNESDAY_MORNING, AgentHarness, open_positions, stream_messages
from waiting import wait_for

from mt5fleet.client.app.market_data import MarketDataFeed
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.core.health import Reason
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import ManualClock
from mt5fleet.proto.domain.ids import magic_for
from mt5fleet.proto.v1 import account_pb2, execution_pb2

FILLED = execution_pb2.EXECUTION_STATUS_FILLED


class SimulatedCrash(BaseException):
    """The process dies: nothing after this point runs (not even `except Exception`)."""


@pytest.mark.slow
async def test_a_30_second_nats_outage_loses_no_report_and_no_account_update(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        opened = h.command()
        await h.send(opened)
        await h.report(opened.command_id)
        fresh_nats_server.stop()
        await wait_for(lambda: not h.agent.publisher.connected, "agent sees the outage")
        during = [h.command() for _ in range(3)]
        for command in during:  # commands it had already received, executed while NATS is away
            h.agent.pipeline.submit(command.SerializeToString(), "live")
        await wait_for(lambda: h.agent.outbox.depth() >= 3, "reports queued in the outbox")
        await asyncio.sleep(30)
        queued = h.agent.outbox.depth()
        fresh_nats_server.start()
        await wait_for(lambda: h.agent.outbox.depth() == 0, "outbox drained after the restart", timeout=60)
        await wait_for(lambda: h.nc.is_connected, "test client back", timeout=30)

        stored = await h.stored_reports()
        ids = [r.command_id for r in stored]
        assert ids == [opened.command_id] + [c.command_id for c in during]  # each once, in order
        assert all(r.status == FILLED for r in stored)
        updates = [account_pb2.AccountProfile.FromString(raw) for raw in await stream_messages(
            h.js, subjects.ACCOUNT_STREAM, subjects.user_subject(h.user_id, subjects.Channel.ACCOUNT))]
        sequences = [u.sequence for u in updates]
        assert sequences == list(range(1, len(sequences) + 1))  # none lost, none twice, in order
        assert queued >= 3 + 20  # about one account update a second was held through the outage
        assert h.agent.reconnects >= 1


async def test_killed_between_order_send_and_ack_the_command_trades_once(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        command = h.command()
        real_execute = h.agent.executor.execute

        def execute_then_die(cmd):
            real_execute(cmd)  # the order reaches the broker ...
            raise SimulatedCrash()  # ... and the agent dies before recording anything

        h.agent.executor.execute = execute_then_die
        await h.send(command)
        await wait_for(lambda: len(open_positions(h.sim)) == 1, "the order reached the broker")
        await asyncio.sleep(0.3)
        assert not h.reports  # nothing was reported: the agent "died"
        await h.agent.stop()

        await h.start_agent()  # same data folder, same terminal: a restart after the crash
        report = await h.report(command.command_id)
        # Found in the deal history (asked for in the broker's server time, GMT+2 here), and
        # reported as done when the deal was made, converted to UTC.
        assert report.status == FILLED and "recovered" in report.reason and "its deals" in report.reason
        deal = h.sim.history_deals_get(ticket=report.deal_ticket)[0]
        assert report.executed_at == deal.time_msc - 2 * 3_600_000 and report.received_at <= report.executed_at
        duplicates = h.agent.metrics.commands.labels("duplicate")
        await wait_for(lambda: duplicates._value.get() == 1, "the catch-up copy handled as a duplicate")
        await h.send(command, msg_id="redelivered")  # and the server delivers it once more
        await wait_for(lambda: duplicates._value.get() == 2, "the redelivered copy handled as a duplicate")
        positions = open_positions(h.sim)
        assert len(positions) == 1 and positions[0].magic == magic_for(command.command_id)
        stored = [r for r in await h.stored_reports() if r.command_id == command.command_id]
        assert len(stored) == 1


async def test_a_command_published_while_the_agent_was_offline_executes_after_reconnect(fresh_nats_server,
                                                                                        tmp_path):
    clock = ManualClock(WEDNESDAY_MORNING)
    async with AgentHarness(fresh_nats_server, tmp_path, clock=clock) as h:
        await h.agent.stop()
        missed = h.command()
        await h.send(missed)  # stored by JetStream while no agent listens
        expired = h.command(expires_at=h.now_ms() + 300)
        await h.send(expired)
        clock.advance(0.5)  # the agent is away past the second command's expiry
        await h.start_agent()  # catch-up reads both from the stream
        assert (await h.report(missed.command_id)).status == FILLED
        assert (await h.report(expired.command_id)).status == execution_pb2.EXECUTION_STATUS_EXPIRED
        assert len(open_positions(h.sim)) == 1


async def test_without_the_catch_up_service_the_agent_keeps_asking_and_says_so(fresh_nats_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mt5fleet.agent")
    async with AgentHarness(fresh_nats_server, tmp_path, health=QUICK_HEALTH) as h:
        await h.agent.stop()
        await h.catchup.stop()  # the platform's catch-up service is down
        missed = h.command()
        await h.send(missed)
        await h.start_agent()
        failures = h.agent.metrics.catchup_failures.labels("no_responders")
        await wait_for(lambda: failures._value.get() >= 2, "failed catch-up attempts counted")
        await wait_for(lambda: Reason.CATCHUP_FAILING in {p.reason for p in h.agent.health.not_ready},
                       "not ready: catchup_failing")
        status = agent_status(h.agent)
        assert status.catchup.state == "failing" and status.catchup.attempts >= 2
        assert "no_responders" in status.catchup.error and h.agent.metrics.catchup_failing._value.get() == 1
        assert caplog.text.count("catch-up failing (no_responders") == 1  # once, not once per attempt
        assert not h.reports
        await h.start_catchup_service()  # back: the next attempt delivers what was missed
        assert (await h.report(missed.command_id, timeout=40)).status == FILLED
        assert h.agent.metrics.catchup_commands._value.get() >= 1
        assert "catch-up succeeded on attempt" in caplog.text and h.agent.metrics.catchup_failing._value.get() == 0
        await wait_for(lambda: h.agent.health.ready, "ready again")
        assert agent_status(h.agent).catchup.state == "done"


async def test_a_connection_that_fails_half_way_is_made_again_and_commands_still_arrive(fresh_nats_server, tmp_path,
                                                                                        monkeypatch):
    """The connection is made, then a later step of setting it up fails (a subscription
    refused while the server restarts): the agent starts over instead of keeping a
    connection that has no subscription for commands."""
    async with AgentHarness(fresh_nats_server, tmp_path, start_agent=False) as h:
        real = MarketDataFeed.attach
        failures = []

        def fail_once(feed, nc):  # before the subscription for commands is made
            if not failures:
                failures.append(nc)
                raise RuntimeError("refused in a server restart")
            return real(feed, nc)

        monkeypatch.setattr(MarketDataFeed, "attach", fail_once)
        await h.start_agent()
        command = h.command()
        await h.send(command)
        assert (await h.report(command.command_id)).status == FILLED
        assert failures and failures[0].is_closed and h.agent.nc.is_connected
