"""Partition leases: each partition owned by exactly one live replica; a dead replica's
partitions are taken over once its leases lapse; a newcomer gets a fair share."""

from __future__ import annotations

import nats

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.workers.adapters.leases import LeaseKeeper
from mt5fleet.workers.core.lease_plan import Lease, plan

NOW = 1_000_000


def test_a_lone_replica_claims_everything():
    decided = plan("a", {}, members=1, partitions=8, now_ms=NOW)
    assert decided.claim == tuple(range(8)) and not decided.release


def test_two_replicas_split_the_partitions():
    leases = {p: Lease("a", NOW + 5000) for p in range(8)}
    assert plan("a", leases, members=2, partitions=8, now_ms=NOW).release == (4, 5, 6, 7)
    assert plan("b", leases, members=2, partitions=8, now_ms=NOW).claim == ()  # nothing free yet
    freed = {**leases, **{p: Lease("a", NOW) for p in (4, 5, 6, 7)}}  # released = expired now
    assert plan("b", freed, members=2, partitions=8, now_ms=NOW).claim == (4, 5, 6, 7)


def test_expired_leases_of_a_dead_replica_are_taken():
    leases = {p: Lease("dead" if p % 2 else "a", NOW - 1 if p % 2 else NOW + 5000) for p in range(8)}
    decided = plan("a", leases, members=1, partitions=8, now_ms=NOW)
    assert decided.claim == (1, 3, 5, 7) and decided.renew == (0, 2, 4, 6)


async def test_keepers_never_double_own_and_take_over_after_a_death(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    kv = await js.key_value(subjects.LEASES_BUCKET)
    a, b = LeaseKeeper(kv, "a", ttl_ms=3000), LeaseKeeper(kv, "b", ttl_ms=3000)
    owned_a = await a.step(NOW)
    assert owned_a == set(range(8))
    owned_b = await b.step(NOW + 100)  # b joins: nothing is free
    assert owned_b == set()
    owned_a = await a.step(NOW + 200)  # and a keeps everything until b has been a member for a ttl
    assert owned_a == set(range(8))
    for at in range(NOW + 600, NOW + 4_000, 500):   # both renewing: b becomes a member, a hands half over
        owned_a = await a.step(at)
        owned_b = await b.step(at + 100)
    assert owned_a | owned_b == set(range(8)) and not owned_a & owned_b and len(owned_b) == 4
    # a dies (stops renewing); after the ttl b owns everything
    owned_b = await b.step(NOW + 7_000)
    assert owned_b == set(range(8))
    await client.close()


async def test_a_replica_back_from_a_lapse_does_not_bounce_partitions(fresh_nats_server):
    """A replica starved of CPU renews late: its leases lapse and its peer takes them. When it
    renews again it gets nothing back until it has been a member for a ttl, then half in one
    hand-over, instead of the partitions going back and forth every round."""
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    kv = await js.key_value(subjects.LEASES_BUCKET)
    a, b = LeaseKeeper(kv, "a", ttl_ms=3000), LeaseKeeper(kv, "b", ttl_ms=3000)
    for at in range(NOW, NOW + 4_000, 500):          # both settled: 4 partitions each
        owned_a, owned_b = await a.step(at), await b.step(at + 100)
    assert len(owned_a) == len(owned_b) == 4
    # b starves: no renewal for 4 s, longer than the ttl. a takes everything.
    owned_a = await a.step(NOW + 8_000)
    assert owned_a == set(range(8))
    owned_b = await b.step(NOW + 8_100)           # b is back: nothing is free, and a keeps all
    owned_a = await a.step(NOW + 8_200)
    assert owned_b == set() and owned_a == set(range(8))
    handovers = 0
    for at in range(NOW + 8_600, NOW + 14_000, 500):
        before = owned_a
        owned_a, owned_b = await a.step(at), await b.step(at + 100)
        handovers += before != owned_a
        assert not owned_a & owned_b
    assert len(owned_a) == len(owned_b) == 4 and handovers == 1
    await client.close()


async def test_renewing_leases_leaves_no_consumers_behind(fresh_nats_server):
    """Two replicas renewing for a while: the bucket's stream has no consumer afterwards
    (listing members through kv.keys() left one ordered consumer per step, ~1,000 in 3 min),
    and a replica that left cleanly no longer counts as a member."""
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    kv = await js.key_value(subjects.LEASES_BUCKET)
    a, b = LeaseKeeper(kv, "a", ttl_ms=3000), LeaseKeeper(kv, "b", ttl_ms=3000)
    for step in range(30):
        await a.step(NOW + step * 100)
        await b.step(NOW + step * 100 + 50)
    info = await js.stream_info(f"KV_{subjects.LEASES_BUCKET}")
    assert info.state.consumer_count == 0
    assert await a._members(NOW + 3100) == 2       # both members for a ttl by now
    await b.release_all(NOW + 3100)
    assert await a._members(NOW + 3100) == 1
    assert await a.step(NOW + 3200) == set(range(8))  # b's partitions handed over at once
    await client.close()
