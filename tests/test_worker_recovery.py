"""The adjustment worker recovers by itself (issue 12), against a real nats-server restarted
on the same port and store, with agents that keep publishing as real ones do:

* a restart mid-stream: positions opened before and after it are all closed by a later
  close signal, every execution report applied exactly once; prices flow again as soon as
  the agents republish (``TC_PRICES``, memory, comes back only because the worker re-creates
  it) with no stale-quote skip; the lease bucket comes back, leases renew, and a surviving
  replica takes over a dead one's partitions;
* a partition consumer and a follower's consumer deleted behind the worker's back;
* ``TC_PRICES`` deleted and recreated at sequence 1 by someone else while the worker had
  read far past that: the new batches are seen at once, not after the old sequence;
* ``/readyz`` red with its reason while leases cannot be renewed, green after recovery.

Nothing is timed: each step waits for the event it needs, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats
import pytest
from factories import FLEET_BID, fleet_signal
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from waiting import eventually, wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.domain import ids
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.follow import FollowOptions
from mt5fleet.proto.v1 import account_pb2, commands_pb2, config_pb2, execution_pb2, prices_pb2, symbols_pb2
from mt5fleet.workers.app.adjust_service import AdjustBudgets, AdjustWorker

WEDNESDAY = 1_795_014_000_000  # 10:00 New York: market open
USERS = ("alice", "bob", "carol", "dave")
TICKETS = {uid: 7001 + i for i, uid in enumerate(USERS)}
FAST = FollowOptions(idle_heartbeat_s=0.5, check_interval_s=1.0, stuck_after_s=3.0)
LEASE_TTL_MS = 1_000
_origin = time.monotonic()


def now_ms() -> int:
    return WEDNESDAY + int((time.monotonic() - _origin) * 1000)


async def connect(server) -> nats.NATS:
    return await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)


class Agents:
    """The users' agents as the worker sees them: a price batch every 0.1 s (best effort, as
    real agents publish them: a failed publish is dropped) and execution reports."""

    def __init__(self, js) -> None:
        self.js = js
        self.bid = FLEET_BID
        self._task: asyncio.Task | None = None

    async def setup(self) -> None:
        kv = await self.js.key_value(subjects.CONFIG_BUCKET)
        spec = symbols_pb2.SymbolSpec(symbol="EURUSD", broker_symbol="EURUSD", digits=5, point=1e-5,
                                      contract_size=100_000, tick_size=1e-5, tick_value=1.0, volume_min=0.01,
                                      volume_max=100, volume_step=0.01, trade_mode=4, currency_base="EUR",
                                      currency_profit="USD")
        for uid in USERS:   # the default max quote age: 2 s
            config = config_pb2.ClientConfig(user_id=uid, tier_name="pro", trading_symbols=["EURUSD"])
            config.risk.max_risk_per_trade = 1.0
            await kv.put(uid, config.SerializeToString())
            specs = symbols_pb2.SymbolSpecList(user_id=uid, timestamp=now_ms(), specs=[spec])
            await self.js.publish(subjects.user_subject(uid, subjects.Channel.SYMBOLS), specs.SerializeToString())
            account = account_pb2.AccountProfile(user_id=uid, account_number="1", base_currency="USD",
                                                 balance=10_000, equity=10_000, margin_free=10_000, timestamp=now_ms())
            await self.js.publish(subjects.user_subject(uid, subjects.Channel.ACCOUNT), account.SerializeToString())
        self._task = asyncio.create_task(self._stream_prices())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _stream_prices(self) -> None:
        while True:
            for uid in USERS:
                batch = prices_pb2.ClientPriceStream(user_id=uid, batch_timestamp=now_ms(), prices=[
                    prices_pb2.ClientPrice(symbol="EURUSD", bid=self.bid, ask=round(self.bid + 1e-4, 5), spread=10,
                                           timestamp=now_ms())])
                with contextlib.suppress(Exception):  # NATS away or TC_PRICES gone: the next batch replaces it
                    await self.js.publish(subjects.user_subject(uid, subjects.Channel.PRICES),
                                          batch.SerializeToString(), timeout=1)
            await asyncio.sleep(0.1)

    async def report(self, command: commands_pb2.TradingCommand, ticket: int) -> None:
        """The fill, as the agent's outbox delivers it: retried until stored, once (its message id)."""
        now = now_ms()
        message = execution_pb2.ExecutionReport(
            command_id=command.command_id, user_id=command.user_id, status=execution_pb2.EXECUTION_STATUS_FILLED,
            retcode=10009, ticket=ticket, fill_price=command.entry_price,
            filled_volume=command.lot_size, received_at=now - 40, executed_at=now - 20, symbol="EURUSD",
            command_type=command.type, order_type=command.order_type, signal_id=command.signal_id)
        subject = subjects.user_subject(command.user_id, subjects.Channel.EXECUTIONS)
        for _ in range(100):
            try:
                await self.js.publish(subject, message.SerializeToString(), timeout=1,
                                      headers={"Nats-Msg-Id": command.command_id})
                return
            except Exception:  # reconnecting: the outbox tries again
                await asyncio.sleep(0.1)
        raise AssertionError(f"report of {command.command_id} never stored")


async def stored_commands(js) -> list[commands_pb2.TradingCommand]:
    info = await js.stream_info(subjects.COMMANDS_STREAM)
    return [commands_pb2.TradingCommand.FromString((await js.get_msg(subjects.COMMANDS_STREAM, seq)).data)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)]


class Replica:
    def __init__(self, worker: AdjustWorker, client) -> None:
        self.worker, self.client, self.handled = worker, client, 0

    @classmethod
    async def start(cls, server, replica_id: str, **options) -> Replica:
        client = await connect(server)
        worker = AdjustWorker(client, replica_id=replica_id, lease_ttl_ms=LEASE_TTL_MS, now_ms=now_ms,
                              follow_options=FAST, **options)
        await worker.start()
        return cls(worker, client)

    async def stop(self, *, release: bool = True) -> None:
        await self.worker.stop(release=release)
        await self.client.close()

    def knows_everyone(self) -> bool:
        state = self.worker.state
        return all(len(table) == len(USERS) for table in (state.policies, state.quotes, state.specs, state.accounts))

    async def send(self, js, signal) -> dict[str, commands_pb2.TradingCommand]:
        """One signal through every partition; its commands by user (one each, or the test fails)."""
        await js.publish(subjects.signal_subject("EURUSD"), signal.SerializeToString(),
                         headers={"Nats-Msg-Id": signal.signal_id})
        self.handled += 1
        done = self.worker.metrics.signals.labels("done")
        await wait_for(lambda: done._value.get() == self.handled * subjects.ADJUST_PARTITIONS,
                       lambda: f"signal {signal.signal_id} on every partition: {done._value.get()} done, "
                               f"owned {sorted(self.worker.owned)}, {self.worker.health.evaluate()}", timeout=15)
        mine = [c for c in await stored_commands(js) if c.signal_id == signal.signal_id]
        by_user = {c.user_id: c for c in mine}
        assert len(by_user) == len(mine), f"a user got two commands for {signal.signal_id}"
        return by_user

    def quote_time(self, uid: str) -> int:
        quote = self.worker.state.quotes.get(uid, {}).get("EURUSD")
        return quote.time_ms if quote is not None else 0

    def skips(self) -> dict[str, float]:
        counted = {sample.labels["reason"]: sample.value
                   for metric in self.worker.metrics.skips.collect() for sample in metric.samples
                   if sample.name.endswith("_total")}
        return {reason: count for reason, count in counted.items() if count}

    def applied(self, stream: str) -> float:
        return self.worker.metrics.state_messages.labels(stream)._value.get()

    def recreated(self, name: str) -> float:
        return self.worker.metrics.recreated.labels(name)._value.get()


@pytest.fixture
async def fleet(fresh_nats_server):
    client = await connect(fresh_nats_server)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    agents = Agents(js)
    await agents.setup()
    yield js, agents
    await agents.close()
    await client.close()


async def fresh_everywhere(replica: Replica, since_ms: int) -> None:
    await wait_for(lambda: all(replica.quote_time(uid) > since_ms for uid in USERS),
                   lambda: f"quotes newer than {since_ms}: {[replica.quote_time(u) for u in USERS]}", timeout=15)


async def test_a_restart_mid_stream_forgets_no_position_and_blacks_out_no_price(fresh_nats_server, fleet):
    js, agents = fleet
    replica = await Replica.start(fresh_nats_server, "solo")
    try:
        await wait_for(lambda: replica.knows_everyone() and len(replica.worker.owned) == 8, "the worker ready")
        opened = await replica.send(js, fleet_signal("sig-open", now_ms()))
        assert set(opened) == set(USERS), opened.keys()
        for uid in ("alice", "bob"):                           # filled and reported before the restart
            await agents.report(opened[uid], TICKETS[uid])
        await wait_for(lambda: replica.applied(subjects.EXECUTIONS_STREAM) == 2, "two fills applied")

        fresh_nats_server.restart()                            # memory streams and buckets are gone now
        restarted = now_ms()
        for uid in ("carol", "dave"):                          # reported after it, as an outbox drains
            await agents.report(opened[uid], TICKETS[uid])
        await fresh_everywhere(replica, restarted)             # the agents' new batches reach the worker

        opened_again = await replica.send(js, fleet_signal("sig-next", now_ms()))
        assert set(opened_again) == set(USERS), replica.skips()   # no user skipped for a stale quote
        assert replica.worker.metrics.skips.labels("stale_quote")._value.get() == 0
        closed = await replica.send(js, fleet_signal("sig-close", now_ms(), commands_pb2.CLOSE_POSITION))
        assert set(closed) == set(USERS)                       # positions from before AND after the restart
        for uid, command in closed.items():
            assert command.position_ticket == TICKETS[uid]
            assert command.target_command_id == ids.command_id_for("sig-open", uid, "open")
        # Each report applied exactly once, each command stored once.
        assert replica.applied(subjects.EXECUTIONS_STREAM) == 4
        commands = await stored_commands(js)
        assert len(commands) == len({c.command_id for c in commands}) == 3 * len(USERS)
        # What only the worker could bring back: the prices stream and the lease bucket (the
        # count may miss a creation whose answer was lost in the reconnect; never two).
        await js.stream_info(subjects.PRICES_STREAM)

        async def leases_back() -> bool:  # by the next lease round after its failure (requests time out)
            try:
                await js.key_value(subjects.LEASES_BUCKET)
            except BucketNotFoundError:
                return False
            return True
        await wait_for(leases_back, "the lease bucket re-created", timeout=10)
        assert replica.recreated(subjects.PRICES_STREAM) <= 1
        await wait_for(lambda: replica.worker.health.evaluate().ready, "the worker ready")
    finally:
        await replica.stop()


async def test_after_a_restart_leases_renew_and_a_survivor_takes_over(fresh_nats_server, fleet):
    first = await Replica.start(fresh_nats_server, "first")
    second = await Replica.start(fresh_nats_server, "second")
    replicas = (first, second)

    def split() -> bool:
        return all(r.worker.owned for r in replicas) and sum(len(r.worker.owned) for r in replicas) == 8
    try:
        await wait_for(split, "the partitions split between the replicas")
        fresh_nats_server.restart()
        await wait_for(lambda: sum(r.recreated(subjects.LEASES_BUCKET) for r in replicas) >= 1,
                       "the lost lease bucket re-created by a replica")
        kv = await second.worker.js.key_value(subjects.LEASES_BUCKET)

        async def renewed() -> set[str]:
            owners = set()
            for partition in range(subjects.ADJUST_PARTITIONS):
                lease = json.loads((await kv.get(subjects.lease_key(partition))).value)
                if lease["expires_ms"] <= now_ms():
                    return set()
                owners.add(lease["owner"])
            return owners
        await eventually(renewed, "live leases of both replicas in the re-created bucket",
                         until=lambda owners: owners == {"first", "second"} and split(), retry_on=(KeyNotFoundError,))
        await first.stop(release=False)                        # dies: its leases lapse after the ttl
        await wait_for(lambda: len(second.worker.owned) == 8, "the survivor owning every partition")
        assert await renewed() == {"second"}
    finally:
        await second.stop()
        if not first.client.is_closed:
            await first.stop()


async def test_consumers_deleted_behind_the_workers_back_are_recreated(fresh_nats_server, fleet):
    js, agents = fleet
    replica = await Replica.start(fresh_nats_server, "solo")
    try:
        await wait_for(lambda: replica.knows_everyone() and len(replica.worker.owned) == 8, "the worker ready")
        opened = await replica.send(js, fleet_signal("sig-open", now_ms()))
        await agents.report(opened["alice"], TICKETS["alice"])
        await wait_for(lambda: replica.applied(subjects.EXECUTIONS_STREAM) == 1, "alice's fill applied")

        partition = subjects.adjust_consumer(subjects.partition_of("bob"))
        await js.delete_consumer(subjects.SIGNALS_STREAM, partition)
        await js.delete_consumer(subjects.EXECUTIONS_STREAM,
                                 replica.worker.state.followers[subjects.EXECUTIONS_STREAM].consumer)
        await agents.report(opened["bob"], TICKETS["bob"])
        second = await replica.send(js, fleet_signal("sig-second", now_ms()))
        assert set(second) == set(USERS)                       # bob's partition pulled again
        await wait_for(lambda: replica.applied(subjects.EXECUTIONS_STREAM) == 2, "bob's fill applied")
        closed = await replica.send(js, fleet_signal("sig-close", now_ms(), commands_pb2.CLOSE_POSITION))
        assert set(closed) == {"alice", "bob"}
        assert replica.recreated(partition) == 1
        await js.consumer_info(subjects.SIGNALS_STREAM, partition)
        # Resumed after what it had finished: the first signal was not read again.
        assert replica.worker.metrics.decisions.labels("existing")._value.get() == 0
        assert replica.applied(subjects.EXECUTIONS_STREAM) == 2
    finally:
        await replica.stop()


async def test_prices_recreated_at_sequence_1_are_seen_at_once(fresh_nats_server, fleet):
    js, agents = fleet
    replica = await Replica.start(fresh_nats_server, "solo")
    try:
        await wait_for(lambda: replica.applied(subjects.PRICES_STREAM) > 40, "the worker far into TC_PRICES")
        follower = replica.worker.state.followers[subjects.PRICES_STREAM]
        far = follower.last_sequence
        # An operator deletes the stream and bootstrap makes it again: it restarts at sequence 1.
        await js.delete_stream(subjects.PRICES_STREAM)
        await bootstrap.create_missing(js, subjects.build_layout(), subjects.PRICES_STREAM)
        agents.bid = 1.10100
        await wait_for(lambda: all(replica.worker.state.quotes[uid]["EURUSD"].bid == 1.10100 for uid in USERS),
                       "the new stream's batches in the worker", timeout=10)
        assert follower.last_sequence < far and follower.resets >= 1
    finally:
        await replica.stop()


async def test_readyz_says_when_no_lease_was_renewed_and_recovers(fresh_nats_server, fleet):
    replica = await Replica.start(fresh_nats_server, "solo", budgets=AdjustBudgets(prices_s=60))
    try:
        await wait_for(lambda: len(replica.worker.owned) == 8, "every partition owned")
        assert replica.worker.health.evaluate().ready
        fresh_nats_server.stop()
        await wait_for(lambda: "leases" in replica.worker.health.evaluate().failing, "the leases check failing",
                       timeout=10)
        verdict = replica.worker.health.evaluate()
        assert not verdict.ready and verdict.alive             # disconnected: a restart would not help
        assert "no lease renewed for" in verdict.failing["leases"]
        assert replica.worker.health.unready.labels("leases")._value.get() == 1
        fresh_nats_server.start()
        await wait_for(lambda: replica.worker.health.evaluate().ready, "ready again", timeout=15)
        assert replica.worker.health.ready_gauge.labels("leases")._value.get() == 1
    finally:
        await replica.stop()
