"""A small fleet for the decision-record tests: four users on a real nats-server (alice
eligible, bob paused, carol over her max spread, dave a JPY account whose sizing converts
through USDJPY) and a real adjustment worker owning every partition.

Import from a test module as ``from decision_fleet import running_fleet`` (conftest puts
this folder on ``sys.path``; there is no package ``tests``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import account_pb2, commands_pb2, config_pb2, decision_pb2, prices_pb2, symbols_pb2
from mt5fleet.workers.adapters import decision_store
from mt5fleet.workers.app.adjust_service import AdjustWorker

WEDNESDAY = 1_795_014_000_000  # 10:00 New York: market open
USERS = {"alice": "eligible", "bob": "paused", "carol": "wide_spread", "dave": "jpy_account"}
_origin = time.monotonic()


def now_ms() -> int:
    return WEDNESDAY + int((time.monotonic() - _origin) * 1000)


def eurusd(user_id: str, bid: float) -> prices_pb2.ClientPriceStream:
    prices = [prices_pb2.ClientPrice(symbol="EURUSD", bid=bid, ask=round(bid + 12e-5, 5), spread=12,
                                     timestamp=now_ms(), broker_symbol="EURUSD.m", digits=5)]
    if user_id == "dave":  # a JPY account: USD profit converted through USDJPY; GBPUSD plays no part
        prices += [prices_pb2.ClientPrice(symbol=s, bid=b, ask=round(b + d, 5), spread=12, timestamp=now_ms(),
                                          digits=3 if s == "USDJPY" else 5)
                   for s, b, d in (("USDJPY", 149.5, 0.012), ("GBPUSD", 1.265, 0.00012))]
    return prices_pb2.ClientPriceStream(user_id=user_id, batch_timestamp=now_ms(), prices=prices)


async def populate(js: Any) -> None:
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    eurusd_spec = symbols_pb2.SymbolSpec(
        symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=1e-5, contract_size=100_000, tick_size=1e-5,
        tick_value=1.0, volume_min=0.01, volume_max=100, volume_step=0.01, trade_mode=4, currency_base="EUR",
        currency_profit="USD", currency_margin="EUR")
    for user_id, kind in USERS.items():
        config = config_pb2.ClientConfig(user_id=user_id, tier_name="pro", trading_symbols=["EURUSD"],
                                         paused=kind == "paused", max_quote_age_ms=60_000)
        config.risk.max_risk_per_trade = 1.0
        config.risk.max_spread_points = 5 if kind == "wide_spread" else 0
        await kv.put(user_id, config.SerializeToString())
        await js.publish(subjects.user_subject(user_id, subjects.Channel.PRICES), eurusd(user_id, 1.10001)
                         .SerializeToString())
        specs = symbols_pb2.SymbolSpecList(user_id=user_id, timestamp=now_ms(), specs=[eurusd_spec])
        await js.publish(subjects.user_subject(user_id, subjects.Channel.SYMBOLS), specs.SerializeToString())
        account = account_pb2.AccountProfile(
            user_id=user_id, account_number="123", base_currency="JPY" if kind == "jpy_account" else "USD",
            balance=1_500_000 if kind == "jpy_account" else 10_000, equity=1_500_000 if kind == "jpy_account"
            else 10_000, margin_free=10_000, timestamp=now_ms(), leverage=100)
        await js.publish(subjects.user_subject(user_id, subjects.Channel.ACCOUNT), account.SerializeToString())


@contextlib.asynccontextmanager
async def running_fleet(url: str) -> AsyncIterator[tuple[Any, AdjustWorker]]:
    """A bootstrapped server with the four users, and a worker owning every partition."""
    client = await nats.connect(url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    await populate(js)
    worker = AdjustWorker(client, replica_id="solo", lease_ttl_ms=2000, now_ms=now_ms)
    await worker.start()
    try:
        await wait_for(lambda: len(worker.owned) == subjects.ADJUST_PARTITIONS and all(
            u in worker.state.accounts and u in worker.state.specs and u in worker.state.policies for u in USERS),
            "the worker owning every partition and seeing every user")
        yield js, worker
    finally:
        await worker.stop()
        await client.close()


async def records_of(js: Any) -> dict[str, decision_pb2.DecisionRecord]:
    return {record.user_id: record async for record, _ in decision_store.decisions(js, "decisions.>")}


async def commands_of(js: Any) -> dict[str, commands_pb2.TradingCommand]:
    messages = decision_store.scan(js, subjects.COMMANDS_STREAM, "tc.*.commands")
    return {c.user_id: c for c in [commands_pb2.TradingCommand.FromString(m.data) async for m in messages]}


async def settled(js: Any, worker: AdjustWorker, rounds: int) -> bool:
    """Every partition handled the signal ``rounds`` times and acknowledged it."""
    if worker.metrics.signals.labels("done")._value.get() < rounds * subjects.ADJUST_PARTITIONS:
        return False
    for partition in range(subjects.ADJUST_PARTITIONS):
        info = await js.consumer_info(subjects.SIGNALS_STREAM, subjects.adjust_consumer(partition))
        if info.num_pending or info.num_ack_pending:
            return False
    return True
