"""The market-data, feedback, fleet-health and catch-up workers recover by themselves and say
on ``/readyz`` when they cannot (issue 12), against a real nats-server:

* market data: ``MARKET_DATA`` (memory) is gone after a restart and the worker re-creates it
  on its next publish; red ("no tick or bar published") when the feed falls silent while the
  market is open, not while it is closed; green again with the next tick;
* fleet health: its heartbeat follower is red while it cannot follow, then ``TC_HEARTBEAT``
  comes back (re-created by the exporter) and new heartbeats are exported;
* feedback: its durable consumer deleted behind its back is re-created where it left off:
  every report counted exactly once; red while pulling fails;
* catch-up: red while requests fail (``TC_COMMANDS`` gone), green once one is served.

Budgets are made short; every step waits for the event it needs, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import nats
from aiohttp import test_utils  # aiohttp's in-process HTTP client and server
from factories import execution, heartbeat
from waiting import eventually, wait_for

from mt5fleet.client.adapters.catchup import CatchupFailed, catch_up
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.follow import FollowOptions
from mt5fleet.proto.runtime.probes import probe_app
from mt5fleet.proto.v1 import market_data_pb2
from mt5fleet.workers.adapters.feeds import Tick
from mt5fleet.workers.app.catchup_service import CatchupService
from mt5fleet.workers.app.feedback_service import FeedbackWorker
from mt5fleet.workers.app.health_exporter import FleetHealth
from mt5fleet.workers.app.marketdata_service import MarketDataWorker

WEDNESDAY = 1_795_014_000_000   # 10:00 New York: the market is open
SATURDAY = WEDNESDAY + 3 * 86_400_000
FAST = FollowOptions(idle_heartbeat_s=0.5, check_interval_s=1.0)


def wall_ms() -> int:
    return int(time.time() * 1000)


async def connect(server) -> nats.NATS:
    return await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)


async def bootstrapped(server) -> nats.NATS:
    client = await connect(server)
    await bootstrap.bootstrap(client.jetstream(), subjects.build_layout())
    return client


class QueueFeed:
    """A reference feed the test hands ticks to, one by one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Tick] = asyncio.Queue()

    async def ticks(self) -> AsyncIterator[Tick]:
        while True:
            yield await self.queue.get()

    async def close(self) -> None:
        pass


async def readyz(health, client) -> tuple[int, dict]:
    """What Kubernetes sees on /readyz."""
    async with test_utils.TestClient(test_utils.TestServer(probe_app(health.registry, client, health))) as http:
        response = await http.get("/readyz")
        return response.status, await response.json()


async def test_marketdata_comes_back_after_a_restart_and_says_when_it_has_nothing_to_publish(fresh_nats_server):
    client = await bootstrapped(fresh_nats_server)
    js, feed, now = client.jetstream(), QueueFeed(), [WEDNESDAY]
    worker = MarketDataWorker(client, feed, now_ms=lambda: now[0], publish_budget_s=0.3)
    work = asyncio.create_task(worker.run())
    published = worker.metrics.published.labels("market_data")
    try:
        await feed.queue.put(Tick("EURUSD", 1.10000, 1.10002, now[0]))
        await wait_for(lambda: published._value.get() == 1, "the first tick published")

        fresh_nats_server.restart()                                   # MARKET_DATA is gone

        async def tick_and_read() -> float:
            """The feed ticks on (a tick published while reconnecting is dropped: the next replaces it)."""
            now[0] += 1_000
            await feed.queue.put(Tick("EURUSD", 1.10100, 1.10102, now[0]))
            stored = await js.get_msg(subjects.MARKET_DATA_STREAM, subject="md.EURUSD", direct=True)
            return market_data_pb2.ClientMarketData.FromString(stored.data).bid
        await eventually(tick_and_read, "a tick after the restart stored", until=lambda bid: bid == 1.10100,
                         retry_on=(Exception,), interval=0.1)
        assert worker.metrics.recreated.labels(subjects.MARKET_DATA_STREAM)._value.get() == 1

        # The feed falls silent while the market is open: red, with the reason, once.
        await wait_for(lambda: "publishing" in worker.health.evaluate().failing, "the publishing check failing")
        status, body = await readyz(worker.health, client)
        assert status == 503 and "no tick or bar published for" in body["failing"]["publishing"]
        assert worker.health.unready.labels("publishing")._value.get() == 1
        now[0] = SATURDAY                                             # a closed market publishes nothing
        assert worker.health.evaluate().ready
        now[0] += 10_000
        before = published._value.get()
        await feed.queue.put(Tick("EURUSD", 1.10200, 1.10202, now[0]))
        await wait_for(lambda: published._value.get() > before, "the next tick published")
        assert (await readyz(worker.health, client))[0] == 200
    finally:
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await client.close()


async def test_fleet_health_is_red_while_it_cannot_follow_and_exports_heartbeats_after_a_restart(fresh_nats_server):
    client = await bootstrapped(fresh_nats_server)
    js = client.jetstream()
    exporter = FleetHealth(now_ms=wall_ms)
    follower = await exporter.follow(client, options=FAST, budget_s=0.3)
    try:
        await js.publish(subjects.user_subject("alice", subjects.Channel.HEARTBEAT),
                         heartbeat(user_id="alice", timestamp=wall_ms()).SerializeToString())
        await wait_for(lambda: "alice" in exporter.beats, "alice's heartbeat")
        fresh_nats_server.stop()
        await wait_for(lambda: "heartbeats" in exporter.health.evaluate().failing, "the heartbeats check failing")
        assert "TC_HEARTBEAT: not following for" in exporter.health.evaluate().failing["heartbeats"]

        fresh_nats_server.start()                                     # TC_HEARTBEAT (memory) is gone
        beat = heartbeat(user_id="bob", timestamp=wall_ms(), outbox_depth=3)
        await eventually(lambda: js.publish(subjects.user_subject("bob", subjects.Channel.HEARTBEAT),
                                            beat.SerializeToString(), timeout=1),
                         "bob's heartbeat stored in the re-created stream", retry_on=(Exception,))
        await wait_for(lambda: "bob" in exporter.beats, "bob's heartbeat exported")
        await wait_for(lambda: exporter.health.evaluate().ready, "ready again")
        assert exporter.beats["bob"].outbox_depth == 3 and "alice" in exporter.beats
    finally:
        await follower.stop()
        await client.close()


async def test_feedback_recreates_its_consumer_where_it_left_off_and_counts_each_report_once(fresh_nats_server):
    client = await bootstrapped(fresh_nats_server)
    js = client.jetstream()
    worker = FeedbackWorker(client, now_ms=wall_ms, fetch_budget_s=0.3)
    work = asyncio.create_task(worker.run())
    filled = worker.metrics.executions.labels("filled", "")

    async def report(command_id: str) -> None:
        now = wall_ms()
        message = execution(command_id=command_id, received_at=now - 400, executed_at=now - 300,
                            command_created_at=now - 500, signal_created_at=now - 1_000)
        await js.publish(subjects.user_subject("alice", subjects.Channel.EXECUTIONS), message.SerializeToString(),
                         headers={"Nats-Msg-Id": command_id})
    try:
        for command_id in ("c1", "c2"):
            await report(command_id)
        await wait_for(lambda: filled._value.get() == 2, "two reports counted")
        await js.delete_consumer(subjects.EXECUTIONS_STREAM, subjects.EXECUTIONS_CONSUMER)
        await report("c3")
        await wait_for(lambda: filled._value.get() == 3, "the third report counted")
        assert worker.metrics.recreated.labels(subjects.EXECUTIONS_CONSUMER)._value.get() == 1

        async def settled() -> bool:
            info = await js.consumer_info(subjects.EXECUTIONS_STREAM, subjects.EXECUTIONS_CONSUMER)
            return info.num_pending == info.num_ack_pending == 0
        await wait_for(settled, "nothing left on the consumer")
        assert filled._value.get() == 3                                # c1 and c2 were not read again

        fresh_nats_server.stop()
        await wait_for(lambda: "fetching" in worker.health.evaluate().failing, "the fetching check failing")
        fresh_nats_server.start()
        await wait_for(lambda: worker.health.evaluate().ready, "ready again", timeout=15)
    finally:
        worker.stop()
        await asyncio.wait_for(work, 10)
        await client.close()


async def test_catchup_is_red_while_requests_fail_and_green_once_one_is_served(fresh_nats_server):
    client = await bootstrapped(fresh_nats_server)
    agent = await nats.connect(fresh_nats_server.url, inbox_prefix=subjects.inbox_prefix("bob"))
    service = CatchupService(client, failing_budget_s=0.2)
    await service.start()
    try:
        await client.jetstream().delete_stream(subjects.COMMANDS_STREAM)

        async def refused() -> bool:
            with contextlib.suppress(CatchupFailed):
                await catch_up(agent, "bob", 0, lambda _: None, timeout_s=1)
            return "requests" in service.health.evaluate().failing
        await wait_for(refused, "the requests check failing")
        status, body = await readyz(service.health, client)
        assert status == 503 and "catch-up requests failing for" in body["failing"]["requests"]

        await bootstrap.create_missing(client.jetstream(), subjects.build_layout(), subjects.COMMANDS_STREAM)
        await eventually(lambda: catch_up(agent, "bob", 0, lambda _: None, timeout_s=1), "a catch-up served",
                         until=lambda read: read == 0, retry_on=(CatchupFailed,))   # nothing stored: 0 read
        assert service.health.evaluate().ready
    finally:
        await service.stop()
        await agent.close()
        await client.close()
