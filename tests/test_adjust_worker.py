"""The adjustment worker against a real nats-server: one signal and 1,000 users give exactly
one correct command per eligible user and none for each kind of ineligible user; killing a
replica mid-fan-out loses no command and duplicates none."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import nats
import pytest
from factories import fleet_signal
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import (
    account_pb2,
    commands_pb2,
    config_pb2,
    prices_pb2,
    symbols_pb2,
)
from mt5fleet.workers.app.adjust_service import AdjustWorker

WEDNESDAY = 1_795_014_000_000  # 10:00 New York: market open
USERS = 1000
INELIGIBLE = ("paused", "symbol_not_traded", "stale_quote", "wide_spread", "no_account")
PER_KIND = 20
_origin = time.monotonic()


def now_ms() -> int:
    return WEDNESDAY + int((time.monotonic() - _origin) * 1000)


def kind_of(index: int) -> str:
    group = index // PER_KIND
    return INELIGIBLE[group] if group < len(INELIGIBLE) else "eligible"


def user_quote(index: int) -> tuple[float, float]:
    bid = round(1.10000 + ((index % 11) - 5) * 1e-5, 5)  # brokers within +-5 points of the reference
    return bid, round(bid + 10e-5, 5)


async def _populate(js) -> None:
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    now = now_ms()
    spec = symbols_pb2.SymbolSpec(symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=1e-5,
                                  contract_size=100_000, tick_size=1e-5, tick_value=1.0, volume_min=0.01,
                                  volume_max=100, volume_step=0.01, stops_level=0, trade_mode=4,
                                  currency_base="EUR", currency_profit="USD", currency_margin="EUR")
    pending = []
    for i in range(USERS):
        uid, kind = f"u{i:04d}", kind_of(i)
        config = config_pb2.ClientConfig(user_id=uid, tier_name="pro", paused=kind == "paused",
                                         trading_symbols=["GBPUSD"] if kind == "symbol_not_traded" else ["EURUSD"])
        config.risk.max_risk_per_trade = 1.0
        # Prices are published once here, not every second as agents do: allow a minute.
        config.max_quote_age_ms = 60_000
        config.risk.max_spread_points = 5 if kind == "wide_spread" else 0
        await kv.put(uid, config.SerializeToString())
        bid, ask = user_quote(i)
        quote_time = now - 120_000 if kind == "stale_quote" else now
        batch = prices_pb2.ClientPriceStream(user_id=uid, batch_timestamp=now, prices=[prices_pb2.ClientPrice(
            symbol="EURUSD", bid=bid, ask=ask, spread=10, timestamp=quote_time, broker_symbol="EURUSD.m")])
        pending.append(js.publish(subjects.user_subject(uid, subjects.Channel.PRICES), batch.SerializeToString()))
        specs = symbols_pb2.SymbolSpecList(user_id=uid, timestamp=now, specs=[spec])
        pending.append(js.publish(subjects.user_subject(uid, subjects.Channel.SYMBOLS), specs.SerializeToString()))
        if kind != "no_account":
            account = account_pb2.AccountProfile(user_id=uid, account_number="123", base_currency="USD",
                                                 balance=10_000, equity=10_000, margin_free=10_000, timestamp=now)
            pending.append(js.publish(subjects.user_subject(uid, subjects.Channel.ACCOUNT),
                                      account.SerializeToString()))
    await asyncio.gather(*pending)


async def _commands(js) -> list[commands_pb2.TradingCommand]:
    info = await js.stream_info(subjects.COMMANDS_STREAM)
    out = []
    if info.state.messages:
        subscription = await js.subscribe("tc.*.commands", ordered_consumer=True)
        while len(out) < info.state.messages:
            out.append(commands_pb2.TradingCommand.FromString((await subscription.next_msg(timeout=5)).data))
        await subscription.unsubscribe()
    return out


async def _count(js) -> int:
    return (await js.stream_info(subjects.COMMANDS_STREAM)).state.messages


def _stored(js, at_least: int) -> Callable[[], Awaitable[bool]]:
    async def stored() -> bool:
        return await _count(js) >= at_least
    return stored


async def _signals_settled(js) -> bool:
    for partition in range(subjects.ADJUST_PARTITIONS):
        info = await js.consumer_info(subjects.SIGNALS_STREAM, subjects.adjust_consumer(partition))
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def _ready(worker: AdjustWorker, partitions: int) -> None:
    def mine() -> int:  # a replica knows only the users of the partitions it owns
        return sum(1 for i in range(USERS) if subjects.partition_of(f"u{i:04d}") in worker.owned)

    def ready() -> bool:
        state = worker.state
        known = (len(state.policies), len(state.quotes), len(state.specs))
        return len(worker.owned) == partitions and known == (mine(),) * 3
    await wait_for(ready, lambda: f"worker ready: owns {len(worker.owned)} of {partitions} partitions, "
                                  f"configs {len(worker.state.policies)} of {mine()}", timeout=20)


@pytest.fixture
async def js(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    stream = client.jetstream()
    fast_redelivery = {"consumers": {subjects.adjust_consumer(p): {"ack_wait_s": 3}
                                     for p in range(subjects.ADJUST_PARTITIONS)}}
    await bootstrap.bootstrap(stream, subjects.build_layout(fast_redelivery))
    await _populate(stream)
    yield stream
    await client.close()


async def test_one_signal_1000_users_one_correct_command_per_eligible_user(fresh_nats_server, js):
    client = await nats.connect(fresh_nats_server.url)
    worker = AdjustWorker(client, replica_id="solo", lease_ttl_ms=2000, now_ms=now_ms)
    await worker.start()
    try:
        await _ready(worker, subjects.ADJUST_PARTITIONS)
        await js.publish(subjects.signal_subject("EURUSD"), fleet_signal("sig-1", now_ms()).SerializeToString(),
                         headers={"Nats-Msg-Id": "sig-1"})
        eligible = sum(1 for i in range(USERS) if kind_of(i) == "eligible")
        done = worker.metrics.signals.labels("done")

        async def fanned_out() -> bool:
            return await _count(js) >= eligible and done._value.get() == subjects.ADJUST_PARTITIONS
        await wait_for(fanned_out, "the signal fanned out on every partition", timeout=20)
        commands = await _commands(js)
        by_user = {c.user_id: c for c in commands}
        assert len(commands) == len(by_user) == eligible
        for i in range(USERS):
            uid = f"u{i:04d}"
            if kind_of(i) != "eligible":
                assert uid not in by_user, kind_of(i)
                continue
            command = by_user[uid]
            bid, ask = user_quote(i)
            # Independent expectation: market BUY at the user's ask, 50/100-pip distances kept,
            # 99 of the 1% of 10,000 USD over 500 points + 20 allowed for the price to move, at
            # 1 USD per point per lot = 0.19 lots (proto/domain/risk.py).
            assert command.entry_price == pytest.approx(ask, abs=1e-9)
            assert command.stop_loss == pytest.approx(round(ask - 0.00500, 5), abs=1e-9)
            assert command.take_profit == pytest.approx(round(ask + 0.01000, 5), abs=1e-9)
            assert command.lot_size == pytest.approx(math.floor(10_000 * 0.01 * 0.99 / 520 / 0.01) * 0.01)
            assert command.original_entry == pytest.approx(1.10002)
            assert command.price_adjustment == pytest.approx(ask - 1.10002, abs=1e-9)
            assert command.adjustment_reason and command.signal_id == "sig-1"
        skips = {kind: worker.metrics.skips.labels(reason)._value.get() for kind, reason in (
            ("paused", "paused"), ("symbol_not_traded", "symbol_not_traded"), ("stale_quote", "stale_quote"),
            ("wide_spread", "wide_spread"), ("no_account", "no_account"))}
        assert skips == {kind: PER_KIND for kind in INELIGIBLE}
    finally:
        await worker.stop()
        await client.close()


@pytest.mark.slow
async def test_killing_a_replica_mid_fan_out_loses_nothing_and_duplicates_nothing(fresh_nats_server, js):
    clients = [await nats.connect(fresh_nats_server.url) for _ in range(2)]
    doomed = AdjustWorker(clients[0], replica_id="doomed", lease_ttl_ms=2000, now_ms=now_ms)
    survivor = AdjustWorker(clients[1], replica_id="survivor", lease_ttl_ms=2000, now_ms=now_ms)
    await doomed.start()
    await wait_for(lambda: len(doomed.owned) == subjects.ADJUST_PARTITIONS, "the first replica owning every partition")
    await survivor.start()
    try:
        await wait_for(lambda: len(doomed.owned) == len(survivor.owned) == subjects.ADJUST_PARTITIONS // 2,
                       "the second replica's fair share of the partitions", timeout=20)
        await _ready(survivor, subjects.ADJUST_PARTITIONS // 2)
        signals = [f"sig-{n}" for n in range(6)]
        for signal_id in signals:
            await js.publish(subjects.signal_subject("EURUSD"), fleet_signal(signal_id, now_ms()).SerializeToString(),
                             headers={"Nats-Msg-Id": signal_id})
        eligible = sum(1 for i in range(USERS) if kind_of(i) == "eligible")
        expected = eligible * len(signals)
        await wait_for(_stored(js, expected // 4), "a quarter of the fan-out stored", timeout=20, interval=0.005)
        await doomed.stop(release=False)  # dies: no lease released, unacknowledged signals left behind
        await asyncio.wait_for(clients[0].close(), 10)
        at_death = await _count(js)
        assert at_death < expected, "the replica died after the fan-out had finished"
        await wait_for(_stored(js, expected), f"all {expected} commands stored", timeout=30)
        # Commands are published before their signal is acknowledged: once no partition has a
        # signal pending or unacknowledged (the dead replica's redelivered), nothing more can come.
        await wait_for(lambda: _signals_settled(js), "every partition's signals acknowledged", timeout=30)
        commands = await _commands(js)
        pairs = [(c.user_id, c.signal_id) for c in commands]
        assert len(pairs) == len(set(pairs)) == expected
        assert len(survivor.owned) == subjects.ADJUST_PARTITIONS
    finally:
        await survivor.stop()
        await clients[1].close()


async def test_malformed_signal_and_price_batch_are_counted_and_skipped(fresh_nats_server, js):
    client = await nats.connect(fresh_nats_server.url)
    worker = AdjustWorker(client, replica_id="solo", lease_ttl_ms=2000, now_ms=now_ms)
    await worker.start()
    try:
        await _ready(worker, subjects.ADJUST_PARTITIONS)
        await js.publish("tc.u0999.prices", b"\x0a\xff\xff not protobuf")
        bid, ask = 1.20000, 1.20010
        fresh = prices_pb2.ClientPriceStream(user_id="u0999", batch_timestamp=now_ms(), prices=[
            prices_pb2.ClientPrice(symbol="EURUSD", bid=bid, ask=ask, spread=10, timestamp=now_ms())])
        await js.publish("tc.u0999.prices", fresh.SerializeToString())
        await js.publish(subjects.signal_subject("EURUSD"), b"\x00\x01garbage", headers={"Nats-Msg-Id": "bad"})
        await js.publish(subjects.signal_subject("EURUSD"), fleet_signal("sig-after", now_ms()).SerializeToString(),
                         headers={"Nats-Msg-Id": "sig-after"})
        eligible = sum(1 for i in range(USERS) if kind_of(i) == "eligible")
        await wait_for(_stored(js, eligible), "a command for every eligible user", timeout=20)
        commands = {c.user_id: c for c in await _commands(js)}
        assert len(commands) == eligible and commands["u0999"].entry_price == pytest.approx(ask)  # stream went on
        assert worker.metrics.invalid.labels("UniversalSignal")._value.get() == subjects.ADJUST_PARTITIONS
        assert worker.metrics.invalid.labels("ClientPriceStream")._value.get() == 1
    finally:
        await worker.stop()
        await client.close()
