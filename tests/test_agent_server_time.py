"""The agent against terminals on different trade-server clocks: a GMT+2/+3 "New York close"
broker in winter and in summer, a UTC broker, across both US daylight-saving switches and
over the weekend close. What a user relies on: every time the agent publishes is UTC, so the
adjustment worker takes its quotes as fresh and the user gets the trade; and the agent says
which offset it converts with (status page, /metrics)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import nats
import pytest
from agent_harness import SATURDAY, WEDNESDAY_MORNING, AgentHarness
from waiting import eventually, wait_for

from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.core.server_time import Rule, Source
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.v1 import commands_pb2, config_pb2, execution_pb2, prices_pb2, signals_pb2
from mt5fleet.proto.validation import check_price_batch, decode
from mt5fleet.workers.app.adjust_service import AdjustWorker

HOUR_S = 3600
# A quote is published within a price interval (0.2 s here) of its tick, and a tick is at
# most one feed step (0.1 s) old: anything further from the clock is a conversion error.
TICK_LATENCY_MS = 1_000
SUMMER_MORNING = dt.datetime(2026, 7, 15, 14, 0, tzinfo=dt.UTC).timestamp()  # 10:00 New York, EDT
FRIDAY_CLOSE_MS = int(dt.datetime(2026, 11, 20, 22, 0, tzinfo=dt.UTC).timestamp() * 1000)
_signals = itertools.count(1)


class JumpingClock(AcceleratedClock):
    """Real time, and a jump over the weekend when the test says so."""

    def __init__(self, start: float) -> None:
        super().__init__(start, 1.0)

    def jump_to(self, moment: dt.datetime) -> None:
        self.start += moment.timestamp() - self.now()


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


async def published_quotes(h: AgentHarness) -> prices_pb2.ClientPriceStream:
    message = await h.js.get_msg(subjects.PRICES_STREAM, subject=subjects.user_subject(h.user_id,
                                                                                       subjects.Channel.PRICES),
                                 direct=True)
    return decode(prices_pb2.ClientPriceStream, message.data)


async def fresh_utc_quotes(h: AgentHarness) -> prices_pb2.ClientPriceStream:
    """The agent's next batch on the wire once its quotes are stamped within a tick's latency of now."""
    async def latest() -> Any:
        return await published_quotes(h)

    def in_utc(batch: Any) -> bool:
        return bool(batch.prices) and all(abs(q.timestamp - h.now_ms()) <= TICK_LATENCY_MS for q in batch.prices)

    return await eventually(latest, lambda: f"UTC quotes (offset {h.agent.terminal.server_clock.offset})",
                            until=in_utc, retry_on=(nats.js.errors.NotFoundError,))


async def assert_publishes_utc(h: AgentHarness, offset_s: int, rule: Rule) -> None:
    batch = await fresh_utc_quotes(h)
    checked = check_price_batch(batch, h.now_ms())  # what the worker does with every batch
    assert not checked.rejected and {q.symbol for q in checked.batch.quotes} == {"EURUSD", "GBPUSD", "USDJPY"}
    offset = h.agent.terminal.server_clock.offset
    assert (offset.offset_at(h.now_ms()), offset.rule, offset.source) == (offset_s, rule, Source.MEASURED)
    status = agent_status(h.agent).server_time
    assert status is not None and (status.offset_s, status.rule, status.source) == (offset_s, rule.value, "measured")
    await wait_for(lambda: h.agent.metrics.server_offset._value.get() == offset_s, "the offset in /metrics")


# ------------------------------------------------------------------ the worker, end to end


async def start_worker(h: AgentHarness) -> tuple[AdjustWorker, list[str], Any]:
    """The real adjustment worker on the test's clock, following this user; skips recorded."""
    kv = await h.js.key_value(subjects.CONFIG_BUCKET)
    config = config_pb2.ClientConfig(user_id=h.user_id, tier_name="pro", trading_symbols=["EURUSD", "GBPUSD"],
                                     monitoring_symbols=["USDJPY"])
    config.risk.max_risk_per_trade = 1.0
    await kv.put(h.user_id, config.SerializeToString())
    skips: list[str] = []
    client = await nats.connect(h.server.url)
    worker = AdjustWorker(client, lease_ttl_ms=2000, now_ms=h.now_ms,
                          on_skip=lambda signal_id, user_id, reason: skips.append(reason))
    await worker.start()
    await wait_for(lambda: len(worker.owned) == subjects.ADJUST_PARTITIONS and all(
        h.user_id in table for table in (worker.state.policies, worker.state.quotes, worker.state.specs,
                                         worker.state.accounts)), "the worker follows the user")
    return worker, skips, client


async def trade_through_the_worker(h: AgentHarness) -> execution_pb2.ExecutionReport:
    """A market BUY signal on the reference feed, now: the user's command, filled."""
    now = h.now_ms()
    bid, ask = h.sim.feed.quote("EURUSD", now)
    signal_id = f"sig-time-{next(_signals)}"
    signal = signals_pb2.UniversalSignal(
        signal_id=signal_id, symbol="EURUSD", order_type=commands_pb2.BUY, reference_bid=bid, reference_ask=ask,
        entry=ask, stop_loss=round(ask - 0.005, 5), take_profit=round(ask + 0.01, 5), confidence=0.8,
        created_at=now, expires_at=now + 60_000, strategy="test", source="OANDA", action=commands_pb2.OPEN_POSITION)
    await h.js.publish(subjects.signal_subject("EURUSD"), signal.SerializeToString(),
                       headers={"Nats-Msg-Id": signal_id})
    await wait_for(lambda: any(r.signal_id == signal_id for r in h.reports), f"the report of {signal_id}")
    return next(r for r in h.reports if r.signal_id == signal_id)


async def filled_through_a_worker(h: AgentHarness) -> execution_pb2.ExecutionReport:
    """A real adjustment worker beside the agent: the signal's command is filled, and the
    worker skipped nobody (no stale or future quote)."""
    worker, skips, client = await start_worker(h)
    try:
        report = await trade_through_the_worker(h)
    finally:
        await worker.stop()
        await client.close()
    assert report.status == execution_pb2.EXECUTION_STATUS_FILLED and not skips, skips
    return report


@pytest.mark.parametrize(("broker", "start", "offset_s", "rule"), [
    ("icm-raw", WEDNESDAY_MORNING, 2 * HOUR_S, Rule.NEW_YORK_CLOSE),   # GMT+2 in winter
    ("icm-raw", SUMMER_MORNING, 3 * HOUR_S, Rule.NEW_YORK_CLOSE),      # GMT+3 in summer
    ("exness-m", WEDNESDAY_MORNING, 0, Rule.FIXED),                     # a UTC server
])
async def test_quotes_reach_the_worker_in_utc_and_the_user_gets_the_trade(fresh_nats_server, tmp_path, broker,
                                                                          start, offset_s, rule):
    async with AgentHarness(fresh_nats_server, tmp_path, start=start, simulated={"broker": broker}) as h:
        assert h.sim.symbol_info_tick("EURUSD" + h.sim.broker.suffix).time_msc - h.now_ms() > offset_s * 1000 - 500
        await assert_publishes_utc(h, offset_s, rule)
        report = await filled_through_a_worker(h)
        assert report.received_at <= report.executed_at <= h.now_ms()


# ------------------------------------------------------------------ over the weekend


@pytest.mark.parametrize(("friday", "saturday", "sunday", "monday", "before", "after"), [
    # US spring switch (Sunday 8 March 2026, 02:00 New York): GMT+2 before, GMT+3 after.
    (utc(2026, 3, 6, 15), utc(2026, 3, 7, 12), utc(2026, 3, 8, 18), utc(2026, 3, 9, 14), 2, 3),
    # US autumn switch (Sunday 1 November 2026): GMT+3 before, GMT+2 after.
    (utc(2026, 10, 30, 14), utc(2026, 10, 31, 12), utc(2026, 11, 1, 19), utc(2026, 11, 2, 15), 3, 2),
])
async def test_across_the_us_switch_the_offset_is_kept_over_the_weekend_and_follows_the_switch(
        fresh_nats_server, tmp_path, friday, saturday, sunday, monday, before, after):
    clock = JumpingClock(friday.timestamp())
    async with AgentHarness(fresh_nats_server, tmp_path, clock=clock) as h:
        await assert_publishes_utc(h, before * HOUR_S, Rule.NEW_YORK_CLOSE)
        close_ms = int((friday.replace(hour=0) + dt.timedelta(hours=22 if before == 2 else 21)).timestamp() * 1000)
        for weekend in (saturday, sunday):  # closed: the Friday tick stands, no tick can be measured
            clock.jump_to(weekend)
            await wait_for(lambda: h.agent.streams.latest["EURUSD"].timestamp == close_ms,
                           f"the week's last quote stamped at the Friday close (UTC) on {weekend:%A}")
            batch = await eventually(lambda: published_quotes(h), "the frozen quote published",
                                     until=lambda b: all(q.timestamp == close_ms for q in b.prices))
            assert batch.prices and h.agent.terminal.server_clock.offset.source is Source.MEASURED
            assert agent_status(h.agent).server_time.offset_s == before * HOUR_S  # kept while no tick flows
        clock.jump_to(monday)
        await assert_publishes_utc(h, after * HOUR_S, Rule.NEW_YORK_CLOSE)
        await filled_through_a_worker(h)


@pytest.mark.parametrize(("broker", "offset_s", "rule"), [
    ("icm-raw", 2 * HOUR_S, Rule.NEW_YORK_CLOSE), ("exness-m", 0, Rule.FIXED)])
async def test_started_at_the_weekend_the_weeks_last_tick_gives_the_offset(fresh_nats_server, tmp_path, broker,
                                                                           offset_s, rule):
    async with AgentHarness(fresh_nats_server, tmp_path, start=SATURDAY, simulated={"broker": broker}) as h:
        await wait_for(lambda: h.agent.streams.latest.get("EURUSD") is not None, "a quote read")
        offset = h.agent.terminal.server_clock.offset
        assert (offset.offset_s, offset.rule, offset.source) == (offset_s, rule, Source.WEEKLY_CLOSE)
        assert h.agent.streams.latest["EURUSD"].timestamp == FRIDAY_CLOSE_MS


async def test_a_restart_at_the_weekend_keeps_the_offset_measured_in_the_week(fresh_nats_server, tmp_path):
    clock = JumpingClock(WEDNESDAY_MORNING)
    async with AgentHarness(fresh_nats_server, tmp_path, clock=clock) as h:
        await assert_publishes_utc(h, 2 * HOUR_S, Rule.NEW_YORK_CLOSE)
        await h.agent.stop()
        kept = json.loads(h.settings.server_time_path.read_text())
        assert (kept["offset_s"], kept["rule"]) == (2 * HOUR_S, "new_york_close")
        clock.jump_to(utc(2026, 11, 21, 15))  # Saturday
        await h.start_agent()
        await wait_for(lambda: h.agent.streams.latest.get("EURUSD") is not None, "a quote read")
        offset = h.agent.terminal.server_clock.offset
        assert (offset.offset_s, offset.source) == (2 * HOUR_S, Source.PERSISTED)
        assert h.agent.streams.latest["EURUSD"].timestamp == FRIDAY_CLOSE_MS
        assert "UTC+02:00 (GMT+2/+3 New York close, persisted)" in agent_status(h.agent).server_time.label
