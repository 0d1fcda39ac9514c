"""A simulated trading week, on an accelerated clock: the agent keeps streaming and trading
through the week and the weekend close without its memory growing."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import tracemalloc

import pytest
from agent_harness import AgentHarness

from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.v1 import commands_pb2, execution_pb2

MONDAY = dt.datetime(2026, 11, 16, 0, 0, tzinfo=dt.UTC).timestamp()
WEEK_S = 7 * 86_400
REAL_SECONDS = 30.0
# At this acceleration a second of queueing is hours of simulated time: commands live a day.
DAY_MS = 86_400_000


@pytest.mark.slow
async def test_a_simulated_week_runs_without_growing_memory(fresh_nats_server, tmp_path):
    clock = AcceleratedClock(MONDAY, WEEK_S / REAL_SECONDS)
    intervals = {"prices_s": 60, "account_s": 600, "heartbeat_s": 300, "symbols_refresh_s": 3600}
    tracemalloc.start()
    try:
        async with AgentHarness(fresh_nats_server, tmp_path, clock=clock, intervals=intervals) as h:
            sizes: list[tuple[float, int]] = []
            sent: list[str] = []
            while clock.now() < MONDAY + WEEK_S:
                command = h.command(expires_at=h.now_ms() + DAY_MS, created_at=h.now_ms(),
                                    signal_created_at=h.now_ms())
                await h.send(command)
                sent.append(command.command_id)
                await asyncio.sleep(REAL_SECONDS / 28)  # a command every simulated 6 hours
                close_all = h.command(type=commands_pb2.CLOSE_ALL, symbol="", lot_size=0, entry_price=0,
                                      stop_loss=0, take_profit=0, expires_at=h.now_ms() + DAY_MS)
                await h.send(close_all)
                sent.append(close_all.command_id)
                gc.collect()
                sizes.append(((clock.now() - MONDAY) / 86_400, tracemalloc.get_traced_memory()[0]))
            for command_id in sent[-2:]:
                await h.report(command_id)
            statuses = {r.command_id: r.status for r in h.reports}
    finally:
        tracemalloc.stop()
    assert set(sent) <= set(statuses), "every command got a report"
    filled = sum(1 for s in statuses.values() if s == execution_pb2.EXECUTION_STATUS_FILLED)
    closed = sum(1 for r in h.reports if r.reject_code == "market_closed")
    assert filled >= 10 and closed >= 2  # traded on weekdays, refused Friday 17:00 to Sunday 17:00
    after_day_one = [size for day, size in sizes if day >= 1.0]
    growth = after_day_one[-1] - after_day_one[0]
    print(f"traced memory from day 1 to day 7: {after_day_one[0] / 1e6:.1f} MB -> {after_day_one[-1] / 1e6:.1f} MB")
    assert growth < 3_000_000, f"memory grew by {growth / 1e6:.1f} MB over the simulated week"
