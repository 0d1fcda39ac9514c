"""Issue 15: adjustment replicas share users. Against a real nats-server, with every user's
prices streaming once a second as agents stream them:

* two replicas each follow and decode only the users of the partitions they own (quotes,
  configs, specs, accounts), together everyone, nobody twice: the server sends each only
  its partitions' price batches (one consumer per partition, filtered on its users);
* a user added later is followed by the replica owning their partition;
* a replica killed while signals keep coming: the survivor takes its partitions over, and
  every (signal, user) is decided once and gets its one command, no user skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter

import nats
import pytest
from factories import fleet_signal
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.follow import Follower, FollowOptions
from mt5fleet.proto.v1 import account_pb2, commands_pb2, config_pb2, decision_pb2, prices_pb2, symbols_pb2
from mt5fleet.workers.app.adjust_service import AdjustWorker

WEDNESDAY = 1_795_014_000_000  # 10:00 New York: market open
# 600 in the suite; MT5FLEET_SCALE_OUT_USERS=10000 runs the hand-over at 10,000.
USERS = [f"user-{n:05d}" for n in range(int(os.environ.get("MT5FLEET_SCALE_OUT_USERS", "600")))]
FAST = FollowOptions(idle_heartbeat_s=0.5, check_interval_s=1.0, stuck_after_s=3.0)
LEASE_TTL_MS = 2_000
_origin = time.monotonic()


def now_ms() -> int:
    return WEDNESDAY + int((time.monotonic() - _origin) * 1000)


def owned_users(worker: AdjustWorker) -> set[str]:
    return {u for u in USERS if subjects.partition_of(u) in worker.owned}


class Agents:
    """Every user's config, spec and account once, then a EURUSD batch per user every second
    (core-published into TC_PRICES, which stores it as it stores the agents' JetStream ones)."""

    def __init__(self, nc) -> None:
        self.nc, self.js = nc, nc.jetstream()
        self.batches = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        kv = await self.js.key_value(subjects.CONFIG_BUCKET)
        spec = symbols_pb2.SymbolSpec(
            symbol="EURUSD", broker_symbol="EURUSD", digits=5, point=1e-5, contract_size=100_000, tick_size=1e-5,
            tick_value=1.0, volume_min=0.01, volume_max=100, volume_step=0.01, trade_mode=4, currency_base="EUR",
            currency_profit="USD", currency_margin="EUR")
        for uid in USERS:
            config = config_pb2.ClientConfig(user_id=uid, tier_name="pro", trading_symbols=["EURUSD"])
            config.risk.max_risk_per_trade = 1.0  # the default 2 s quote age: only live prices are fresh
            await kv.put(uid, config.SerializeToString())
            await self.js.publish(subjects.user_subject(uid, subjects.Channel.SYMBOLS), symbols_pb2.SymbolSpecList(
                user_id=uid, timestamp=now_ms(), specs=[spec]).SerializeToString())
            await self.js.publish(subjects.user_subject(uid, subjects.Channel.ACCOUNT), account_pb2.AccountProfile(
                user_id=uid, account_number="1", base_currency="USD", balance=10_000, equity=10_000,
                margin_free=10_000, timestamp=now_ms()).SerializeToString())
        self._task = asyncio.create_task(self._stream())

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            for uid in USERS:
                batch = prices_pb2.ClientPriceStream(user_id=uid, batch_timestamp=now_ms(), prices=[
                    prices_pb2.ClientPrice(symbol="EURUSD", bid=1.10000, ask=1.10002, spread=2, timestamp=now_ms(),
                                           broker_symbol="EURUSD")])
                await self.nc.publish(subjects.user_subject(uid, subjects.Channel.PRICES), batch.SerializeToString())
                self.batches += 1
            due += 1.0
            await asyncio.sleep(max(due - loop.time(), 0.0))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
async def fleet(fresh_nats_server):
    nc = await nats.connect(fresh_nats_server.url)
    js = nc.jetstream()
    fast_redelivery = {"consumers": {subjects.adjust_consumer(p): {"ack_wait_s": 3}
                                     for p in range(subjects.ADJUST_PARTITIONS)}}
    await bootstrap.bootstrap(js, subjects.build_layout(fast_redelivery))
    agents = Agents(nc)
    await agents.start()
    try:
        yield js, agents
    finally:
        await agents.stop()
        await nc.close()


async def start_replica(url: str, replica_id: str) -> tuple[AdjustWorker, object]:
    client = await nats.connect(url)
    worker = AdjustWorker(client, replica_id=replica_id, lease_ttl_ms=LEASE_TTL_MS, now_ms=now_ms,
                          follow_options=FAST)
    await worker.start()
    return worker, client


def knows_exactly_its_users(worker: AdjustWorker) -> bool:
    mine, state = owned_users(worker), worker.state
    return bool(mine) and all(set(table) == mine for table in (state.policies, state.quotes, state.specs,
                                                               state.accounts))


async def test_two_replicas_each_follow_only_their_partitions(fresh_nats_server, fleet):
    first, first_nc = await start_replica(fresh_nats_server.url, "first")
    second, second_nc = await start_replica(fresh_nats_server.url, "second")
    try:
        await wait_for(lambda: len(first.owned) == len(second.owned) == subjects.ADJUST_PARTITIONS // 2
                       and knows_exactly_its_users(first) and knows_exactly_its_users(second),
                       lambda: f"the partitions shared out: {sorted(first.owned)} {sorted(second.owned)}, "
                               f"{len(first.state.quotes)} + {len(second.state.quotes)} users' quotes", timeout=30)
        assert not set(first.owned) & set(second.owned)
        assert owned_users(first) | owned_users(second) == set(USERS)
        # The server delivers each replica only its partitions' batches: a second's worth of
        # batches is about half the users for each, never everyone's.
        before = {w.replica_id: w.metrics.state_messages.labels(subjects.PRICES_STREAM)._value.get()
                  for w in (first, second)}
        await asyncio.sleep(3)
        for worker in (first, second):
            got = worker.metrics.state_messages.labels(subjects.PRICES_STREAM)._value.get() - before[worker.replica_id]
            assert got <= 3.6 * len(owned_users(worker)), (worker.replica_id, got, len(owned_users(worker)))
            assert got >= 1.5 * len(owned_users(worker)), (worker.replica_id, got, len(owned_users(worker)))
        # Other partitions' configs, specs and accounts are kept as bytes and never decoded.
        assert first.metrics.users._value.get() == len(owned_users(first))
        # Each price consumer filters on exactly its partition's users.
        group = first.state.followers[subjects.PRICES_STREAM]
        for partition, follower in group.parts.items():
            info = await first.js.consumer_info(subjects.PRICES_STREAM, follower.consumer)
            wanted = {subjects.user_subject(u, subjects.Channel.PRICES) for u in USERS
                      if subjects.partition_of(u) == partition}
            assert set(info.config.filter_subjects or [info.config.filter_subject]) == wanted
        # A user who joins later is followed by whichever replica owns their partition.
        late = "late-joiner"
        owner = first if subjects.partition_of(late) in first.owned else second
        config = config_pb2.ClientConfig(user_id=late, tier_name="pro", trading_symbols=["EURUSD"])
        await (await first.js.key_value(subjects.CONFIG_BUCKET)).put(late, config.SerializeToString())
        await first_nc.publish(subjects.user_subject(late, subjects.Channel.PRICES), prices_pb2.ClientPriceStream(
            user_id=late, batch_timestamp=now_ms(), prices=[prices_pb2.ClientPrice(
                symbol="EURUSD", bid=1.1, ask=1.10002, spread=2, timestamp=now_ms())]).SerializeToString())
        await wait_for(lambda: late in owner.state.quotes and late in owner.state.policies,
                       "the late joiner's quote at the replica owning its partition", timeout=10)
        other = second if owner is first else first
        assert late not in other.state.quotes and late not in other.state.policies
    finally:
        for worker, client in ((first, first_nc), (second, second_nc)):
            await worker.stop()
            await client.close()


@pytest.mark.slow
async def test_killing_a_replica_while_users_stream_skips_nobody_and_decides_nobody_twice(fresh_nats_server,
                                                                                       fleet):
    js, _agents = fleet
    doomed, doomed_nc = await start_replica(fresh_nats_server.url, "doomed")
    await wait_for(lambda: len(doomed.owned) == subjects.ADJUST_PARTITIONS, "the first replica owning everything")
    survivor, survivor_nc = await start_replica(fresh_nats_server.url, "survivor")
    signals: list[str] = []
    try:
        await wait_for(lambda: len(doomed.owned) == len(survivor.owned) == subjects.ADJUST_PARTITIONS // 2
                       and knows_exactly_its_users(doomed) and knows_exactly_its_users(survivor),
                       "the partitions shared out and each replica ready", timeout=30)

        async def send(n: int) -> None:
            signal_id = f"sig-{n}"
            signals.append(signal_id)
            await js.publish(subjects.signal_subject("EURUSD"), fleet_signal(signal_id, now_ms()).SerializeToString(),
                             headers={"Nats-Msg-Id": signal_id})

        for n in range(3):
            await send(n)
            await asyncio.sleep(0.3)
        # Dies mid-stream: leases not released, signals in flight unacknowledged, its
        # connection gone. Signals keep coming while its partitions have no owner.
        await doomed.stop(release=False)
        await asyncio.wait_for(doomed_nc.close(), 10)
        for n in range(3, 8):
            await send(n)
            await asyncio.sleep(0.5)
        await wait_for(lambda: len(survivor.owned) == subjects.ADJUST_PARTITIONS and knows_exactly_its_users(survivor),
                       "the survivor owning every partition, knowing every user", timeout=30)
        expected = len(USERS) * len(signals)

        async def all_decided() -> bool:
            return (await js.stream_info(subjects.DECISIONS_STREAM)).state.messages >= expected
        await wait_for(all_decided, f"{expected} decisions stored", timeout=60)

        async def settled() -> bool:
            for partition in range(subjects.ADJUST_PARTITIONS):
                info = await js.consumer_info(subjects.SIGNALS_STREAM, subjects.adjust_consumer(partition))
                if info.num_pending or info.num_ack_pending:
                    return False
            return True
        await wait_for(settled, "every partition's signals acknowledged", timeout=60)

        records = await read_all(js, subjects.DECISIONS_STREAM, "decisions.>", decision_pb2.DecisionRecord)
        decided = Counter((r.user_id, r.signal_id) for r in records)
        assert len(records) == expected and set(decided.values()) == {1}
        skipped = Counter(r.skip_reason for r in records if r.skip_reason)
        assert not skipped, skipped   # nobody skipped: no stale or missing quote across the hand-over
        commands = await read_all(js, subjects.COMMANDS_STREAM, "tc.*.commands", commands_pb2.TradingCommand)
        pairs = Counter((c.user_id, c.signal_id) for c in commands)
        assert len(commands) == expected and set(pairs.values()) == {1}
        assert {r.worker_replica for r in records} == {"doomed", "survivor"}
    finally:
        await survivor.stop()
        await survivor_nc.close()


async def read_all(js, stream: str, subject: str, message_type) -> list:
    info = await js.stream_info(stream)
    out = []
    if info.state.messages:
        subscription = await js.subscribe(subject, ordered_consumer=True)
        while len(out) < info.state.messages:
            out.append(message_type.FromString((await subscription.next_msg(timeout=5)).data))
        await subscription.unsubscribe()
    return out


async def test_a_price_follower_filters_on_thousands_of_users(fresh_nats_server):
    """One partition of 100,000 users is 12,500 subjects: a consumer filter that long is
    created, and delivers exactly the last batch of each of its users."""
    nc = await nats.connect(fresh_nats_server.url)
    js = nc.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    everyone = [f"u{n:05d}" for n in range(4_000)]
    for uid in everyone:
        await nc.publish(subjects.user_subject(uid, subjects.Channel.PRICES), uid.encode())
    await nc.flush()
    mine = everyone[::2]
    seen: list[str] = []
    follower = Follower(nc, subjects.PRICES_STREAM, lambda msg: seen.append(msg.data.decode()), options=FAST,
                        filter_subjects=tuple(subjects.user_subject(u, subjects.Channel.PRICES) for u in mine),
                        label="partition 0, 2000 users")
    try:
        await follower.start()
        assert await follower.drained(20)
        assert sorted(seen) == sorted(mine)
    finally:
        await follower.stop()
        await nc.close()
