"""The agent executes each command type exactly once and reports every outcome.

Real nats-server, real protobuf, the simulated MT5 terminal behind the agent's one
Terminal adapter."""

from __future__ import annotations

import pytest
from agent_harness import AgentHarness, open_positions
from waiting import wait_for

from mt5fleet.proto.domain.ids import magic_for
from mt5fleet.proto.v1 import commands_pb2, execution_pb2

FILLED = execution_pb2.EXECUTION_STATUS_FILLED


@pytest.fixture
async def harness(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        yield h


async def test_market_buy_fills_at_the_broker_ask_and_is_tagged_with_the_command(harness):
    command = harness.command()
    await harness.send(command)
    report = await harness.report(command.command_id)
    assert report.status == FILLED, report.reason
    assert report.filled_volume == pytest.approx(0.1) and report.fill_price > 0
    assert report.symbol == "EURUSD" and report.retcode == 10009
    positions = open_positions(harness.sim)
    assert len(positions) == 1
    position = positions[0]
    assert position.symbol.startswith("EURUSD") and position.symbol != "EURUSD"  # the broker's suffixed name
    assert position.magic == magic_for(command.command_id) and position.comment == command.command_id
    assert position.sl == pytest.approx(command.stop_loss) and position.tp == pytest.approx(command.take_profit)
    assert report.ticket == position.ticket


async def test_slippage_is_reported_against_the_adjusted_and_the_reference_entry(harness):
    """The worker adjusted the entry at an earlier, lower ask; the agent sends today's ask.
    Slippage is the trader's cost against what the command promised (positive = worse), not
    against the price the agent happened to send."""
    ask = harness.quote().ask
    entry = round(ask - 0.00005, 5)            # adjusted when the ask was 5 points lower
    reference = round(entry - 0.00003, 5)       # the reference feed's entry, 3 points below that
    command = harness.command(entry_price=entry, original_entry=reference, reference_price=reference)
    await harness.send(command)
    report = await harness.report(command.command_id)
    assert report.status == FILLED, report.reason
    sent = harness.sim.history_orders_get(ticket=report.order_ticket)[0].price_open
    assert sent != entry and report.requested_price == entry and report.reference_price == reference
    point = harness.sim.symbol_info("EURUSD.raw").point
    assert report.slippage_points == pytest.approx((report.fill_price - entry) / point, abs=1e-3)
    assert report.slippage_reference_points == pytest.approx((report.fill_price - reference) / point, abs=1e-3)
    assert report.slippage_points > 0 and report.slippage_reference_points == pytest.approx(
        report.slippage_points + 3, abs=1e-3)


async def test_pending_order_is_placed_not_filled(harness):
    tick = harness.quote()
    command = harness.command(order_type=commands_pb2.BUY_LIMIT, entry_price=round(tick.ask - 0.0030, 5),
                              stop_loss=round(tick.ask - 0.0080, 5), take_profit=round(tick.ask + 0.0070, 5))
    await harness.send(command)
    report = await harness.report(command.command_id)
    assert report.status == FILLED and report.retcode == 10008  # TRADE_RETCODE_PLACED
    orders = harness.sim.orders_get()
    assert len(orders) == 1 and orders[0].price_open == pytest.approx(command.entry_price)
    assert not open_positions(harness.sim)


async def test_modify_then_partial_close_then_close_all(harness):
    opened = harness.command(lot_size=0.3)
    await harness.send(opened)
    assert (await harness.report(opened.command_id)).status == FILLED
    ticket = open_positions(harness.sim)[0].ticket
    tick = harness.quote()
    modify = harness.command(type=commands_pb2.MODIFY_POSITION, target_command_id=opened.command_id, lot_size=0,
                             entry_price=0, stop_loss=round(tick.bid - 0.0020, 5),
                             take_profit=round(tick.bid + 0.0200, 5))
    await harness.send(modify)
    assert (await harness.report(modify.command_id)).status == FILLED
    assert open_positions(harness.sim)[0].sl == pytest.approx(modify.stop_loss)

    close = harness.command(type=commands_pb2.CLOSE_POSITION, position_ticket=ticket, lot_size=0.1,
                            entry_price=0, stop_loss=0, take_profit=0)
    await harness.send(close)
    report = await harness.report(close.command_id)
    assert report.status == FILLED and report.filled_volume == pytest.approx(0.1)
    assert open_positions(harness.sim)[0].volume == pytest.approx(0.2)

    close_all = harness.command(type=commands_pb2.CLOSE_ALL, symbol="EURUSD", lot_size=0, entry_price=0,
                                stop_loss=0, take_profit=0)
    await harness.send(close_all)
    assert (await harness.report(close_all.command_id)).status == FILLED
    assert not open_positions(harness.sim)


async def test_a_command_delivered_twice_trades_once(harness):
    command = harness.command()
    await harness.send(command, msg_id="first")
    await harness.send(command, msg_id="second")  # a different message id: JetStream keeps both
    await harness.report(command.command_id)
    await wait_for(lambda: harness.agent.metrics.commands.labels("duplicate")._value.get() >= 1, "duplicate seen")
    assert len(open_positions(harness.sim)) == 1
    assert [r.status for r in harness.reports if r.command_id == command.command_id] == [FILLED]


async def test_an_expired_command_is_refused_and_reported(harness):
    now = harness.now_ms()
    command = harness.command(created_at=now - 20_000, expires_at=now - 5_000)
    await harness.send(command)
    report = await harness.report(command.command_id)
    assert report.status == execution_pb2.EXECUTION_STATUS_EXPIRED and report.reject_code == "expired"
    assert not open_positions(harness.sim)


async def test_a_malformed_command_is_reported_and_the_next_good_one_still_executes(harness):
    await harness.send(b"\xff\xfe not protobuf", msg_id="garbage")
    broken = harness.command(lot_size=float("nan"))
    await harness.send(broken)
    good = harness.command()
    await harness.send(good)
    assert (await harness.report(good.command_id)).status == FILLED
    refused = await harness.report(broken.command_id)
    assert refused.status == execution_pb2.EXECUTION_STATUS_REJECTED and refused.reject_code == "invalid"
    assert "lot_size" in refused.reason
    assert harness.agent.metrics.invalid.labels("TradingCommand")._value.get() == 2
    assert len(open_positions(harness.sim)) == 1


async def test_on_a_netting_account_a_second_buy_reports_the_position_it_added_to(fresh_nats_server, tmp_path):
    """Close and modify commands target the reported ticket: it must be the position's,
    not the second order's (a netting account keeps one position per symbol)."""
    async with AgentHarness(fresh_nats_server, tmp_path, simulated={"broker": "eu-netting", "seed": 7}) as h:
        first, second = h.command(), h.command()
        for command in (first, second):
            await h.send(command)
        reports = [await h.report(c.command_id) for c in (first, second)]
        assert [r.status for r in reports] == [FILLED, FILLED]
        [position] = h.sim.positions_get()
        assert reports[0].ticket == reports[1].ticket == position.ticket
        assert reports[1].order_ticket != position.ticket
