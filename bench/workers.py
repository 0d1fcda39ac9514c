"""Adjustment-worker benchmarks against a real embedded nats-server, each next to a raw
nats-py baseline measured in the same run:

* fan-out: one signal -> every user decided, its decision record and command stored by
  JetStream (the worker's ``_fan_out`` on all 8 partitions at once), vs raw JetStream
  publishes of the same records and commands, 256 in flight, with message ids;
* ingest: ClientPriceStream batches/s the worker's state absorbs (decode, validate,
  update) from JetStream, vs a raw core subscription counting the same messages.

    python bench/workers.py [--users 10000] [--batches 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time

import nats
from _common import now_ms, populate, signal

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.v1 import prices_pb2
from mt5fleet.workers.adapters import wire
from mt5fleet.workers.adapters.decisions import record_message
from mt5fleet.workers.app.adjust_service import AdjustWorker


async def bench_fanout(url: str, users: int) -> dict:
    """The worker's whole decision path for one signal (``AdjustWorker._fan_out`` on every
    partition at once: adjust, store each decision record, then its command), against raw
    nats-py JetStream publishes of the same records and commands (ids suffixed), 256 in
    flight, in the same run; and the adjustment alone."""
    client = await nats.connect(url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    worker = AdjustWorker(client, replica_id="bench", now_ms=now_ms)
    populate(worker, users)
    sig = signal("bench-1")
    t0 = time.perf_counter()
    decisions = worker.decisions_for_users(sig, worker.state.users(), now_ms())
    adjust_only = time.perf_counter() - t0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker._fan_out(sig, p, now_ms()) for p in range(subjects.ADJUST_PARTITIONS)))
    product = time.perf_counter() - t0
    stored = int(worker.metrics.commands._value.get())
    payloads = []
    for decision in decisions:
        record = record_message(decision, worker_replica="raw")
        subject = subjects.decision_subject(decision.user_id, decision.signal_id + "-raw")
        payloads.append((subject, subject, record.SerializeToString()))
        payloads += [(f"tc.{c.user_id}.commands", c.command_id + "-raw", wire.command_message(c).SerializeToString())
                     for c in decision.commands]
    slots = asyncio.Semaphore(256)

    async def raw_publish(subject: str, msg_id: str, payload: bytes) -> None:
        async with slots:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)

    started = time.perf_counter()
    await asyncio.gather(*(raw_publish(*p) for p in payloads))
    baseline = time.perf_counter() - started
    await client.close()
    return {"users": users, "commands": stored, "messages_stored": len(payloads),
            "adjust_only_s": round(adjust_only, 3), "adjust_us_per_user": round(adjust_only / users * 1e6, 1),
            "adjusted_and_stored_s": round(product, 3), "users_per_s": round(users / product),
            "baseline_raw_js_publish_s": round(baseline, 3),
            "baseline_js_publish_per_s": round(len(payloads) / baseline),
            "ratio_to_baseline": round(baseline / product, 3), "load_average": os.getloadavg()}


async def bench_ingest(url: str, batches: int, users: int) -> dict:
    publisher = await nats.connect(url)
    consumer = await nats.connect(url)
    js = publisher.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    now = now_ms()
    payloads = []
    for n in range(batches):
        uid = f"u{n % users:05d}"
        batch = prices_pb2.ClientPriceStream(user_id=uid, batch_timestamp=now, sequence=n, prices=[
            prices_pb2.ClientPrice(symbol=s, bid=1.1, ask=1.1001, spread=10, timestamp=now)
            for s in ("EURUSD", "GBPUSD", "USDJPY")])
        payloads.append((f"tc.{uid}.prices", batch.SerializeToString()))

    async def run(handler) -> float:
        done = asyncio.Event()
        seen = 0

        async def callback(message) -> None:
            nonlocal seen
            handler(message)
            seen += 1
            if seen == batches:
                done.set()
        subscription = await consumer.subscribe("tc.*.prices", cb=callback, pending_msgs_limit=batches * 2)
        await consumer.flush()
        started = time.perf_counter()
        for subject, payload in payloads:
            await publisher.publish(subject, payload)
        await publisher.flush()
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - started
        await subscription.unsubscribe()
        return elapsed

    baseline = await run(lambda message: None)
    worker = AdjustWorker(consumer, replica_id="ingest", now_ms=now_ms)
    product = await run(lambda message: worker.state.on_prices(message.subject, message.data))
    await publisher.close()
    await consumer.close()
    return {"load_average": os.getloadavg(), "batches": batches, "quotes_per_batch": 3,
            "batches_per_s": round(batches / product),
            "baseline_subscribe_per_s": round(batches / baseline), "ratio_to_baseline": round(baseline / product, 3)}


async def main(users: int, batches: int) -> None:
    with EmbeddedNats() as server:
        results = {
            "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
                       f"Python {platform.python_version()}, 2 cores",
            "nats_server": ".".join(map(str, server.version)),
            "fanout_1k": await bench_fanout(server.url, 1_000),
        }
    with EmbeddedNats() as server:
        results["fanout"] = await bench_fanout(server.url, users)
    with EmbeddedNats() as server:
        results["ingest"] = await bench_ingest(server.url, batches, users)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=20_000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.users, arguments.batches))
