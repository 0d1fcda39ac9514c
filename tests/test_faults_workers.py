"""Fault: an adjustment-worker replica, an OS process of its own, killed with SIGKILL in the
middle of a signal's fan-out to many users.

Two replicas share the eight partitions through the lease bucket. A signal reaches all 1,000
users; the moment the first decision record (in the second case, the first command) of one
replica's users is seen on NATS, that replica is killed. Some of its users then have their
command, some only their decision record (it is written first), some nothing. The other
replica takes the dead one's partitions when their leases lapse, the partitions' consumers
redeliver the signal, and the records make the second fan-out publish the first one's commands
again (deduplicated by ``Nats-Msg-Id``). In the end every user has exactly one decision record
and exactly one command stored: none lost, none twice, none replaced by a different one.

The replicas are ``python tests/fault_kit.py adjust`` processes: the same ``AdjustWorker`` that
``mt5fleet worker adjust`` runs, on a clock every process of the test shares, set to a weekday
morning in New York (the CLI's wall clock would make a Saturday run a run with the market closed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import nats
import pytest
from fault_kit import adjust_process, read_ledger, replica_status, shifted_clock
from waiting import eventually, wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import account_pb2, commands_pb2, config_pb2, prices_pb2, signals_pb2, symbols_pb2

USERS = [f"u{index:04d}" for index in range(1_000)]
WEDNESDAY = 1_795_014_000_000    # 10:00 New York: the FX market is open (workers and test share this clock)
LEASE_TTL_MS = 3_000             # the dead replica's partitions are free 3 s after its last renewal
LAYOUT = subjects.build_layout()  # as `mt5fleet nats bootstrap` makes it: its signal comes back after the ack wait
EURUSD = symbols_pb2.SymbolSpec(
    symbol="EURUSD", broker_symbol="EURUSD", digits=5, point=1e-5, contract_size=100_000, tick_size=1e-5,
    tick_value=1.0, volume_min=0.01, volume_max=100, volume_step=0.01, trade_mode=4, currency_base="EUR",
    currency_profit="USD", currency_margin="EUR")


async def populate(js: Any, users: Iterable[str], now_ms: int) -> None:
    """Each user as the operator and an agent leave it: a config, a EURUSD quote, the symbol's
    spec and an account (what a worker needs to adjust a signal for the user)."""
    kv = await js.key_value(subjects.CONFIG_BUCKET)

    async def one(user_id: str) -> None:
        config = config_pb2.ClientConfig(user_id=user_id, tier_name="pro", trading_symbols=["EURUSD"],
                                         max_quote_age_ms=120_000)
        config.risk.max_risk_per_trade = 1.0
        await kv.put(user_id, config.SerializeToString())
        quote = prices_pb2.ClientPrice(symbol="EURUSD", bid=1.10001, ask=1.10013, spread=12, timestamp=now_ms,
                                       broker_symbol="EURUSD", digits=5)
        for channel, message in (
                (subjects.Channel.PRICES, prices_pb2.ClientPriceStream(user_id=user_id, batch_timestamp=now_ms,
                                                                       prices=[quote])),
                (subjects.Channel.SYMBOLS, symbols_pb2.SymbolSpecList(user_id=user_id, timestamp=now_ms,
                                                                      specs=[EURUSD])),
                (subjects.Channel.ACCOUNT, account_pb2.AccountProfile(
                    user_id=user_id, account_number="1", base_currency="USD", balance=10_000, equity=10_000,
                    margin_free=10_000, timestamp=now_ms, leverage=100))):
            await js.publish(subjects.user_subject(user_id, channel), message.SerializeToString())

    users = list(users)
    for start in range(0, len(users), 100):
        await asyncio.gather(*(one(u) for u in users[start:start + 100]))


def buy_signal(now_ms: int) -> signals_pb2.UniversalSignal:
    return signals_pb2.UniversalSignal(
        signal_id=f"sig-{uuid.uuid4().hex[:8]}", symbol="EURUSD", order_type=commands_pb2.BUY,
        reference_bid=1.10000, reference_ask=1.10010, entry=1.10010, stop_loss=1.09860, take_profit=1.10310,
        confidence=0.8, created_at=now_ms, expires_at=now_ms + 120_000, strategy="breakout",
        action=commands_pb2.OPEN_POSITION)


def owners(status: dict[str, Any]) -> set[int]:
    return set(status.get("owned", []))


PER_PARTITION = Counter(subjects.partition_of(u) for u in USERS)


def ready_for_own_users(status: dict[str, Any]) -> bool:
    ready = status.get("ready", {})
    return bool(owners(status)) and all(ready.get(str(p), 0) == PER_PARTITION[p] for p in owners(status))


# Where the fan-out is when the replica dies: after the first decision record it stored (some of
# its users decided, none with a command yet) or after the first command (every user decided,
# a few commands out).
KILL_AT = {"first record": f"{subjects.DECISIONS_PREFIX}.*.*",
           "first command": subjects.user_wildcard(subjects.Channel.COMMANDS)}


@pytest.mark.parametrize("kill_at", list(KILL_AT))
async def test_a_replica_killed_mid_fan_out_hands_its_users_over(fresh_nats_server, tmp_path, kill_at):
    offset_ms = WEDNESDAY - int(time.time() * 1000)   # every process's clock: a weekday morning in New York
    now_ms = shifted_clock(offset_ms)
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream(timeout=10)
    await bootstrap.bootstrap(js, LAYOUT)
    await populate(js, USERS, now_ms())
    servers = (fresh_nats_server.url,)
    doomed = adjust_process(servers, offset_ms=offset_ms, replica="doomed",
                            lease_ttl_ms=LEASE_TTL_MS, folder=tmp_path, publish_delay_ms=100)
    heir: Any = None
    try:
        # The first replica takes every partition; the second then gets half of them.
        await wait_for(lambda: len(owners(replica_status(tmp_path, "doomed"))) == subjects.ADJUST_PARTITIONS,
                       "the first replica owning every partition", timeout=20)
        heir = adjust_process(servers, offset_ms=offset_ms, replica="heir",
                              lease_ttl_ms=LEASE_TTL_MS, folder=tmp_path)
        await wait_for(lambda: len(owners(replica_status(tmp_path, "doomed"))) == 4 and len(
            owners(replica_status(tmp_path, "heir"))) == 4, lambda: f"the partitions shared: "
            f"{replica_status(tmp_path, 'doomed')} {replica_status(tmp_path, 'heir')}", timeout=30)
        await wait_for(lambda: all(ready_for_own_users(replica_status(tmp_path, r)) for r in ("doomed", "heir")),
                       "each replica seeing its users' configs, quotes, specs and accounts", timeout=30)
        doomed_partitions = owners(replica_status(tmp_path, "doomed"))
        doomed_users = {u for u in USERS if subjects.partition_of(u) in doomed_partitions}

        # The first record (command) of one of its users is on the wire: it is mid-fan-out. Kill it.
        killed = asyncio.Event()

        async def on_output(message: Any) -> None:
            user_id = message.subject.split(".")[1]  # decisions.<uid>.<key>, tc.<uid>.commands
            if not killed.is_set() and user_id in doomed_users:
                os.kill(doomed.pid, signal.SIGKILL)
                killed.set()
        watch = await client.subscribe(KILL_AT[kill_at], cb=on_output)
        signal_message = buy_signal(now_ms())
        await js.publish(subjects.signal_subject("EURUSD"), signal_message.SerializeToString(),
                         headers={"Nats-Msg-Id": signal_message.signal_id})
        await asyncio.wait_for(killed.wait(), 20)
        await watch.unsubscribe()
        doomed.wait(timeout=10)
        at_kill = await read_ledger(js, reports=False)
        done_at_kill = {c.user_id for c in at_kill.commands} & doomed_users
        recorded_at_kill = {r.user_id for r in at_kill.records} & doomed_users
        assert len(done_at_kill) < len(doomed_users) and recorded_at_kill, f"not killed mid-way: " \
            f"{len(recorded_at_kill)} decided, {len(done_at_kill)} commands of {len(doomed_users)} users"

        # The heir takes the partitions; the signal comes back to it; every user ends with one command.
        await wait_for(lambda: len(owners(replica_status(tmp_path, "heir"))) == subjects.ADJUST_PARTITIONS,
                       "the surviving replica owning every partition", timeout=30)

        async def commands_stored() -> int:
            return len((await read_ledger(js, reports=False)).commands)
        await eventually(commands_stored, "a command for every user", timeout=30,
                         until=lambda n: n >= len(USERS), interval=0.2)
        ledger = await read_ledger(js, reports=False)
        counts = ledger.check(USERS, reports=False)
        assert counts == {"signals": 1, "decisions": len(USERS), "commands": len(USERS)}, counts
        # The records of users decided before the kill are the dead replica's, the rest the heir's:
        # a command published twice was the same command.
        by_replica = {r.user_id: r.worker_replica for r in ledger.records}
        assert {u for u in doomed_users if by_replica[u] == "doomed"} == recorded_at_kill
        assert {u for u in USERS if by_replica[u] == "heir"} == set(USERS) - recorded_at_kill
        assert done_at_kill <= recorded_at_kill, "a command stored before its decision record"
        recorded = {c.command_id: c for r in ledger.records for c in r.commands}
        for command in ledger.commands:
            assert command == recorded[command.command_id]
        # The dead replica's partitions delivered the signal twice: once to it, once to the heir
        # (which acknowledges it just after its last command is stored).
        for partition in doomed_partitions:
            async def acknowledged(partition: int = partition) -> bool:
                info = await js.consumer_info(subjects.SIGNALS_STREAM, subjects.adjust_consumer(partition))
                assert info.delivered.consumer_seq >= 2, (partition, info.delivered)
                return info.ack_floor.stream_seq == 1
            await wait_for(acknowledged, f"the signal acknowledged on partition {partition}", timeout=10)
    finally:
        for process in (doomed, heir):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        await client.close()
