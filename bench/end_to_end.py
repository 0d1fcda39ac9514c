"""Signal published -> command received by the agent, at 1,000 agents streaming prices.

Against a real embedded nats-server:

* 1,000 simulated agents (``_common.AgentPool``: one NATS connection each, over 2
  processes), each publishing a real ClientPriceStream (EURUSD, GBPUSD, USDJPY) through
  JetStream every second with ``Nats-Msg-Id`` — 1,000 batches/s into TC_PRICES — and
  holding a plain subscription on its ``tc.<uid>.commands``;
* the real AdjustWorker in its own process (``AdjustWorker.start()``: it follows prices,
  specs and accounts from JetStream and the ``tc-config`` bucket, takes the 8 partition
  leases and pulls signals), with 1,000 users' configs, specs and accounts written as in
  tests/test_adjust_worker.py and the default 2 s maximum quote age (the live prices keep
  the quotes fresh);
* a signal on ``signals.EURUSD`` (JetStream, ``Nats-Msg-Id``) every ``--every`` seconds
  for ``--seconds``; latency = the agent's callback decoded its command minus the moment
  just before the signal's publish (``time.monotonic()``, one clock for all processes).

Baseline, same run and load: a raw NATS request/reply round trip (256 bytes) from this
process to a responder on one of the agents' connections, every 10 ms.

Then, unless ``--profile-signals 0``, more signals with cProfile on in the worker process:
what dominates the worker side. Those latencies are reported apart (profiling slows it).

``--capacity 1000 5000 10000`` instead measures one worker replica's headroom: N users'
prices at 1 batch/s (core-published from this process, no agent connections), the
worker's CPU on prices alone (the baseline), then 3 signals 8 s apart: commands stored by
8 s after the last signal, stale-quote skips (docs/benchmarks/worker_capacity.json).

    python bench/end_to_end.py [--agents 1000] [--seconds 30] [--every 3] [--profile-signals 5]
    python bench/end_to_end.py --capacity 1000 5000 10000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import statistics
import sys
import time
from typing import Any

import nats
from _common import (
    AgentPool,
    command_line,
    cpu_s,
    latency_summary,
    machine,
    now_ms,
    origin,
    price_batch,
    process_cpu_s,
    raise_nofile,
    server_pid,
    set_origin,
    uid_of,
    universal_signal,
    user_account,
    user_config,
    user_specs,
    write_results,
)

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.v1 import commands_pb2
from mt5fleet.workers.app.adjust_service import AdjustWorker

ECHO_PAYLOAD = b"x" * 256


async def populate(js: Any, users: int) -> None:
    """Configs, specs and accounts as tests/test_adjust_worker.py writes them (prices come live)."""
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    now = now_ms()
    pending = []
    for i in range(users):
        uid = uid_of(i)
        await kv.put(uid, user_config(uid).SerializeToString())
        pending.append(js.publish(subjects.user_subject(uid, subjects.Channel.SYMBOLS),
                                  user_specs(uid, now).SerializeToString()))
        pending.append(js.publish(subjects.user_subject(uid, subjects.Channel.ACCOUNT),
                                  user_account(uid, now).SerializeToString()))
    await asyncio.gather(*pending)


# ---------------------------------------------------------------------- the worker process
def _worker_child(conn: Any, url: str, origin_at: float, users: int, replica_id: str = "e2e",
                  replicas: int = 1, settle_heap: bool = True) -> None:
    try:
        asyncio.run(_worker_main(conn, url, origin_at, users, replica_id, replicas, settle_heap))
    except Exception as exc:
        conn.send({"error": repr(exc)})


async def _worker_main(conn: Any, url: str, origin_at: float, users: int, replica_id: str = "e2e",
                       replicas: int = 1, settle_heap: bool = True) -> None:
    set_origin(origin_at)
    nc = await natsconn.connect(natsconn.NatsSettings(servers=(url,), name=f"adjust-worker-{replica_id}"))
    worker = AdjustWorker(nc, replica_id=replica_id, now_ms=now_ms, lease_ttl_ms=3_000 if replicas > 1 else 10_000,
                         settle_heap=settle_heap)   # as the runner does; --no-settle-heap to compare
    stages = trace_stages(worker)
    await worker.start()
    state = worker.state

    def ready() -> bool:  # its fair share of the partitions, and exactly their users known
        if len(worker.owned) != subjects.ADJUST_PARTITIONS // replicas:
            return False
        mine = sum(1 for i in range(users) if subjects.partition_of(uid_of(i)) in worker.owned)
        return len(state.policies) == len(state.quotes) == len(state.specs) == len(state.accounts) == mine
    while not ready():
        await asyncio.sleep(0.1)
    conn.send({"ready": True})
    loop = asyncio.get_running_loop()
    profiler: cProfile.Profile | None = None
    cpu_at = cpu_s()
    while True:
        while not await loop.run_in_executor(None, conn.poll, 0.2):
            pass
        command = conn.recv()
        if command == "mark":  # the measured phase starts
            cpu_at = cpu_s()
            conn.send({"ok": True})
        elif command == "report":  # the measured phase is over
            conn.send({"cpu_s": cpu_s() - cpu_at, "metrics": metrics_of(worker), "stages": stages})
        elif command == "profile":  # the profiled phase starts
            profiler = cProfile.Profile()
            profiler.enable()
            conn.send({"ok": True})
        elif command == "unprofile":  # its last signal's time is up
            profiler.disable()
            conn.send({"ok": True})
        elif command == "stop":
            conn.send({"metrics": metrics_of(worker), "profile": profile_of(profiler)})
            break
    await worker.stop()
    await nc.close()


def trace_stages(worker: AdjustWorker) -> list[tuple[str, str, int, float]]:
    """Wrap (not change) the worker's per-partition steps to time them: (stage, signal id,
    partition, time.monotonic()) for picked up, first commands adjusted (the first chunk of
    users; the worker publishes while it adjusts the rest), adjusted (the partition's last
    chunk) and stored (every command acked, the signal acked)."""
    stages: list[tuple[str, str, int, float]] = []
    handle, decisions_for_users = worker._handle, worker.decisions_for_users
    current: dict[str, int] = {}

    async def timed_handle(partition: int, message: Any) -> None:
        picked = time.monotonic()
        signal_id = message.headers.get("Nats-Msg-Id", "?") if message.headers else "?"
        stages.append(("picked_up", signal_id, partition, picked))
        await handle(partition, message)
        stages.append(("stored", signal_id, partition, time.monotonic()))

    def timed_decisions_for_users(signal: Any, users: list[str], now: int) -> list[Any]:
        out = decisions_for_users(signal, users, now)
        partition = subjects.partition_of(users[0], worker.partitions) if users else -1
        first = current.get(signal.signal_id) is None
        current[signal.signal_id] = partition
        stages.append(("first_adjusted" if first else "adjusted", signal.signal_id, partition, time.monotonic()))
        stages.append(("adjusted", signal.signal_id, partition, time.monotonic()))
        return out

    worker._handle, worker.decisions_for_users = timed_handle, timed_decisions_for_users
    return stages


def stage_summary(stages: list[tuple[str, str, int, float]], sent: dict[str, float]) -> dict[str, Any]:
    """Per signal, ms after its publish: first partition picked up, last partition adjusted,
    last partition stored; the medians over the signals."""
    rows = {}
    for signal_id, at in sent.items():
        mine = [(stage, t - at) for stage, s, _, t in stages if s == signal_id]
        if not mine:
            continue
        rows[signal_id] = {
            "first_picked_up_ms": round(min(t for stage, t in mine if stage == "picked_up") * 1000, 1),
            "last_picked_up_ms": round(max(t for stage, t in mine if stage == "picked_up") * 1000, 1),
            "first_adjusted_ms": round(min((t for stage, t in mine if stage == "first_adjusted"),
                                           default=float("nan")) * 1000, 1),
            "all_adjusted_ms": round(max(t for stage, t in mine if stage == "adjusted") * 1000, 1),
            "all_stored_ms": round(max((t for stage, t in mine if stage == "stored"), default=float("nan")) * 1000, 1),
        }
    keys = ("first_picked_up_ms", "last_picked_up_ms", "first_adjusted_ms", "all_adjusted_ms", "all_stored_ms")
    return {"median": {k: round(statistics.median(r[k] for r in rows.values()), 1) for k in keys} if rows else {},
            "per_signal": rows}


def metrics_of(worker: AdjustWorker) -> dict[str, float]:
    out = {}
    for family in worker.metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_total", "_sum", "_count")):
                labels = ",".join(f"{k}={v}" for k, v in sample.labels.items())
                out[sample.name + (f"{{{labels}}}" if labels else "")] = round(sample.value, 4)
    return out


def profile_of(profiler: cProfile.Profile | None, top: int = 25) -> dict[str, Any] | None:
    if profiler is None:
        return None
    stats = pstats.Stats(profiler)
    total = stats.total_tt

    def rows(key: str) -> list[dict[str, Any]]:
        ordered = sorted(stats.stats.items(), key=lambda item: item[1][2 if key == "tottime" else 3], reverse=True)
        return [{"function": f"{path.split('site-packages/')[-1].split('/work/main/')[-1]}:{line}({name})",
                 "calls": calls, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
                for (path, line, name), (_, calls, tt, ct, _) in ordered[:top]]

    def cumulative(where: str, name: str) -> float:
        return sum(ct for (path, _, function), (_, _, _, ct, _) in stats.stats.items()
                   if path.endswith(where) and function == name)

    # Where the worker's time goes (cumulative, so nested calls are inside their caller).
    shares = {label: round(cumulative(where, name) / total, 3) for label, where, name in (
        ("price ingest: FleetState.on_prices (decode, validate, update)", "adapters/fleet_state.py", "on_prices"),
        ("  of which check_price_batch (validation)", "proto/validation.py", "check_price_batch"),
        ("adjustment: AdjustWorker.decisions_for_users", "workers/app/adjust_service.py", "decisions_for_users"),
        ("storing a chunk: AdjustWorker._store_many (records, then commands)", "workers/app/adjust_service.py",
         "_store_many"),
        ("  decision records encoded and published: DecisionStore.record_many", "adapters/decision_store.py",
         "record_many"),
        ("  of which encoding them: decisions.record_message", "adapters/decisions.py", "record_message"),
        ("  batched JetStream publishes: BatchPublisher.publish_many", "adapters/streams.py", "publish_many"),
        ("one by one, retried: AdjustWorker._publish", "workers/app/adjust_service.py", "_publish"),
        ("nats-py reading: Client._read_loop (socket, protocol parse, dispatch)", "nats/aio/client.py", "_read_loop"),
        ("idle: epoll wait", "~", "<method 'poll' of 'select.epoll' objects>"),
    )}
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return {"total_s": round(total, 3), "shares_of_total": shares, "by_tottime": rows("tottime"),
            "by_cumtime": rows("cumtime"), "text": text.getvalue()}


class WorkerProcess:
    def __init__(self, url: str, users: int, replica_id: str = "e2e", replicas: int = 1,
                 settle_heap: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_child, daemon=True,
                                       args=(child, url, origin(), users, replica_id, replicas, settle_heap))
        self.process.start()

    async def ask(self, message: Any, timeout: float = 120) -> dict[str, Any]:
        if message is not None:
            self.conn.send(message)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while not await loop.run_in_executor(None, self.conn.poll, 0.5):
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"worker process: no answer (alive {self.process.is_alive()})")
        answer = self.conn.recv()
        if "error" in answer:
            raise RuntimeError(f"worker process: {answer['error']}")
        return answer

    async def join(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 30)


# ---------------------------------------------------------------------- the run
async def echo_loop(nc: Any, stop: asyncio.Event, period: float, out: list[float], failures: list[int]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            await nc.request("bench.echo", ECHO_PAYLOAD, timeout=2)
            out.append(time.monotonic() - started)
        except Exception:
            failures[0] += 1
        await asyncio.sleep(period)


async def signal_phase(js: Any, requester: Any, pool: AgentPool, tag: str, signals: int, every: float,
                       users: int, *, when_sent: Any = None) -> dict[str, Any]:
    await pool.arm(signals)
    sent: dict[str, float] = {}
    rtts: list[float] = []
    failures = [0]
    stop = asyncio.Event()
    echo = asyncio.create_task(echo_loop(requester, stop, 0.01, rtts, failures))
    started = time.monotonic()
    for n in range(signals):
        await asyncio.sleep(max(started + n * every - time.monotonic(), 0))
        signal_id = f"{tag}-{n}"
        payload = universal_signal(signal_id, ttl_ms=120_000).SerializeToString()
        sent[signal_id] = time.monotonic()
        await js.publish(subjects.signal_subject("EURUSD"), payload, headers={"Nats-Msg-Id": signal_id})
    await asyncio.sleep(max(started + signals * every - time.monotonic(), 0))
    if when_sent is not None:
        await when_sent()
    received = await pool.collect(timeout=10)
    stop.set()
    await echo
    latencies = [at - sent[signal_id] for at, signal_id in received if signal_id in sent]
    per_signal = {}
    for signal_id in sent:
        mine = sorted(at - sent[signal_id] for at, s in received if s == signal_id)
        per_signal[signal_id] = {"received": len(mine), "first_ms": round(mine[0] * 1000, 1) if mine else None,
                                 "last_ms": round(mine[-1] * 1000, 1) if mine else None}
    return {"sent": sent, "signals": signals, "every_s": every, "expected": signals * users, "received": len(latencies),
            "duration_s": round(time.monotonic() - started, 1),
            "signal_to_command": latency_summary(latencies), "request_reply": latency_summary(rtts),
            "request_reply_failures": failures[0], "per_signal": per_signal}


async def floor_phase(nc: Any, pool: AgentPool, uids: list[str], signals: int, every: float) -> dict[str, Any]:
    """The delivery floor: per "signal", one command for every agent core-published by a bare
    nats-py loop in this process (no worker, no JetStream, no decision), received and decoded by
    the same agents under the same price load. What no worker could beat on this machine."""
    await pool.arm(signals)
    sent: dict[str, float] = {}
    started = time.monotonic()
    for n in range(signals):
        await asyncio.sleep(max(started + n * every - time.monotonic(), 0))
        signal_id = f"floor-{n}"
        payloads = [(subjects.user_subject(uid, subjects.Channel.COMMANDS), commands_pb2.TradingCommand(
            command_id=f"{signal_id}-{uid}", user_id=uid, symbol="EURUSD", lot_size=0.1, entry_price=1.085,
            signal_id=signal_id, adjustment_reason="floor").SerializeToString()) for uid in uids]
        sent[signal_id] = time.monotonic()
        for subject, payload in payloads:
            await nc.publish(subject, payload)
        await nc.flush()
    received = await pool.collect(timeout=10)
    latencies = [at - sent[signal_id] for at, signal_id in received if signal_id in sent]
    return {"signals": signals, "expected": signals * len(uids), "received": len(latencies),
            "publish_to_agent": latency_summary(latencies)}


async def main(arguments: argparse.Namespace) -> None:
    raise_nofile()
    run_started = time.perf_counter()
    users = arguments.agents
    uids = [uid_of(i) for i in range(users)]
    with EmbeddedNats() as server:
        results: dict[str, Any] = {
            "benchmark": "end_to_end",
            "agents": users,
            "replicas": arguments.replicas,
            "settle_heap": arguments.settle_heap,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "command": command_line("end_to_end.py", sys.argv[1:]),
            "machine": machine(server.version),
            "model": f"{users} agents, one NATS connection each over {arguments.processes} processes, each "
                     "publishing a real ClientPriceStream (3 quotes) via JetStream every 1 s (staggered) and "
                     "holding a plain subscription on tc.<uid>.commands; the real AdjustWorker (start(): "
                     "JetStream state, leases, 8 partition pull consumers) in its own process; signals "
                     "published to signals.EURUSD via JetStream from the bench process",
            "baseline": "NATS request/reply round trip (256 B) bench process -> responder on an agent "
                        "connection -> back, every 10 ms during the same phase; and the delivery floor: one "
                        "command per agent core-published by a bare loop in the bench process, same load",
        }
        client = await nats.connect(server.url, name="signal-engine")
        js = client.jetstream()
        await bootstrap.bootstrap(js, subjects.build_layout())
        await populate(js, users)
        async with AgentPool(server.url, uids, processes=arguments.processes, prices=True, echo=True) as pool:
            print(f"{users} agents connected in {pool.connect_s:.1f} s, streaming prices", flush=True)
            replicas = [WorkerProcess(server.url, users, f"e2e-{n}", arguments.replicas, arguments.settle_heap)
                        for n in range(arguments.replicas)]
            worker = replicas[0]
            for replica in replicas:
                await replica.ask(None)
            print(f"{len(replicas)} worker replica(s) ready; warming up", flush=True)
            await asyncio.sleep(3)
            requester = await nats.connect(server.url, name="requester")
            for replica in replicas:
                await replica.ask("mark")
            prices_before = await pool.stats()
            pids = {"nats-server": server_pid(server),
                    **{("worker" if n == 0 else f"worker-{n}"): r.process.pid for n, r in enumerate(replicas)},
                    **{f"agents-{n}": pid for n, pid in enumerate(pool.pids)}}
            cpu_before = cpu_by_process(pids)
            signals = max(1, round(arguments.seconds / arguments.every))
            measured = await signal_phase(js, requester, pool, "e2e", signals, arguments.every, users)
            cpu_after = cpu_by_process(pids)
            prices_after = await pool.stats()
            phases = [await replica.ask("report") for replica in replicas]
            worker_phase = {"cpu_s": sum(p["cpu_s"] for p in phases),
                            "metrics": {k: sum(p["metrics"].get(k, 0) for p in phases) for k in phases[0]["metrics"]},
                            "stages": [tuple(stage) for p in phases for stage in p["stages"]]}
            measured["prices_published"] = prices_after["prices_published"] - prices_before["prices_published"]
            measured["prices_failed"] = prices_after["prices_failed"] - prices_before["prices_failed"]
            measured["price_batches_per_s"] = round(measured["prices_published"] / measured["duration_s"])
            measured["worker_cpu_s"] = round(worker_phase["cpu_s"], 2)
            measured["worker_cpu_share_of_a_core"] = round(worker_phase["cpu_s"] / measured["duration_s"], 3)
            measured["worker_metrics"] = worker_phase["metrics"]
            # Who used the 2 cores during the measured phase (share of one core each).
            measured["cpu_share_of_a_core_by_process"] = {
                name: round((cpu_after[name] - cpu_before[name]) / measured["duration_s"], 3) for name in cpu_after}
            measured["worker_stages"] = stage_summary(worker_phase["stages"], measured.pop("sent"))
            results["measured"] = measured
            report("measured", measured)
            floor = await floor_phase(client, pool, uids, signals, arguments.every)
            results["delivery_floor"] = floor
            print(f"delivery floor (bare core publish of one command per agent): "
                  f"p50 {floor['publish_to_agent']['p50_ms']} ms, p99 {floor['publish_to_agent']['p99_ms']} ms "
                  f"({floor['received']} of {floor['expected']} received)", flush=True)
            if arguments.profile_signals:
                await worker.ask("profile")
                profiled = await signal_phase(js, requester, pool, "profiled", arguments.profile_signals,
                                              arguments.every, users, when_sent=lambda: worker.ask("unprofile"))
                final = await worker.ask("stop")
                profiled.pop("per_signal")
                profiled.pop("sent")
                results["profiled"] = {**profiled, "worker_metrics_cumulative": final["metrics"],
                                       "worker_profile": final["profile"]}
                report("under cProfile", profiled)
                print(final["profile"]["text"][:3000])
                print(json.dumps(final["profile"]["shares_of_total"], indent=1))
            else:
                await worker.ask("stop")
            await worker.join()
            for replica in replicas[1:]:
                await replica.ask("stop")
                await replica.join()
            await requester.close()
        await client.close()
    m = results["measured"]
    results["ratio_p50_to_request_reply"] = round(m["signal_to_command"]["p50_ms"] / m["request_reply"]["p50_ms"], 1)
    results["ratio_p99_to_request_reply"] = round(m["signal_to_command"]["p99_ms"] / m["request_reply"]["p99_ms"], 1)
    floor = results["delivery_floor"]["publish_to_agent"]
    results["ratio_p50_to_delivery_floor"] = round(m["signal_to_command"]["p50_ms"] / floor["p50_ms"], 1)
    results["ratio_p99_to_delivery_floor"] = round(m["signal_to_command"]["p99_ms"] / floor["p99_ms"], 1)
    results["run_time_s"] = round(time.perf_counter() - run_started)
    print(f"signal -> command p50 is {results['ratio_p50_to_request_reply']}x the request/reply p50; "
          f"run time {results['run_time_s']} s")
    write_results(arguments.output, results)


# ---------------------------------------------------------------------- one replica's capacity
async def offer_prices(clients: list[Any], users: int, stop: asyncio.Event, sent: list[int]) -> None:
    """Every user's batch once a second, core-published into TC_PRICES (lighter on this
    process than 10,000 JetStream publishers; the server stores them all the same)."""
    loop = asyncio.get_running_loop()
    per_tick, tick, index = max(users // 100, 1), 0.01, 0
    due = loop.time()
    while not stop.is_set():
        for _ in range(per_tick):
            user = index % users
            index += 1
            batch = price_batch(user, uid_of(user), index // users + 1, now_ms())
            await clients[user % len(clients)].publish(f"tc.{uid_of(user)}.prices", batch.SerializeToString())
            sent[0] += 1
        due += tick
        await asyncio.sleep(max(due - loop.time(), 0))


async def capacity(users: int, signals: int, every: float) -> dict[str, Any]:
    """One worker replica (all 8 partitions), ``users`` users streaming a batch a second, the
    default 2 s quote age: its CPU on prices alone, then ``signals`` signals; how many
    commands were stored in time and how many users were skipped as stale."""
    with EmbeddedNats() as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await bootstrap.bootstrap(js, subjects.build_layout())
        await populate(js, users)
        publishers = [await nats.connect(server.url) for _ in range(8)]
        stop, sent = asyncio.Event(), [0]
        offering = asyncio.create_task(offer_prices(publishers, users, stop, sent))
        await asyncio.sleep(2)
        worker = WorkerProcess(server.url, users)
        await worker.ask(None, timeout=300)
        await asyncio.sleep(3)
        await worker.ask("mark")
        offered, started = sent[0], time.monotonic()
        await asyncio.sleep(10)
        quiet = await worker.ask("report")
        quiet_s = time.monotonic() - started
        await worker.ask("mark")
        offered_busy, started = sent[0], time.monotonic()
        sent_at: dict[str, float] = {}
        for n in range(signals):
            signal_id = f"capacity-{users}-{n}"
            sent_at[signal_id] = time.monotonic()
            await js.publish(subjects.signal_subject("EURUSD"), universal_signal(signal_id, ttl_ms=120_000)
                             .SerializeToString(), headers={"Nats-Msg-Id": signal_id})
            await asyncio.sleep(every)
        busy = await worker.ask("report")
        busy_s = time.monotonic() - started
        stop.set()
        await offering
        await worker.ask("stop")
        await worker.join()
        for nc in (*publishers, client):
            await nc.close()
    metrics = busy["metrics"]
    return {
        "users": users, "signals": signals, "every_s": every,
        "price_batches_per_s": round((offered_busy - offered) / quiet_s),
        "worker_cpu_share_prices_only": round(quiet["cpu_s"] / quiet_s, 2),
        "worker_cpu_share_with_signals": round(busy["cpu_s"] / busy_s, 2),
        "commands_expected": users * signals,
        "counted_s_after_last_signal": every,
        "commands_stored_in_time": int(metrics.get("mt5fleet_worker_commands_published_total", 0)),
        "stale_quote_skips": int(metrics.get("mt5fleet_worker_skips_total{reason=stale_quote}", 0)),
        "worker_stages": stage_summary(busy["stages"], sent_at),
    }


async def capacity_main(arguments: argparse.Namespace) -> None:
    raise_nofile()
    started = time.perf_counter()
    with EmbeddedNats() as server:
        version = server.version
    results: dict[str, Any] = {
        "benchmark": "worker_capacity", "command": command_line("end_to_end.py", sys.argv[1:]),
        "machine": machine(version),
        "model": "one AdjustWorker replica in its own process (start(): all 8 partitions), N users' configs, "
                 "specs and accounts as in tests/test_adjust_worker.py, every user's 3-quote ClientPriceStream "
                 "core-published into TC_PRICES once a second from the bench process over 8 connections; no agent "
                 "connections (commands counted by the worker's metrics); default 2 s quote age",
        "baseline": "the same worker with prices only (no signals)",
        "scales": {},
    }
    for users in arguments.capacity:
        row = await capacity(users, 3, 8.0)
        results["scales"][str(users)] = row
        print(f"{users} users: worker CPU {row['worker_cpu_share_prices_only']} of a core on prices alone, "
              f"{row['worker_cpu_share_with_signals']} with signals; {row['commands_stored_in_time']}/"
              f"{row['commands_expected']} commands stored in time, {row['stale_quote_skips']} stale-quote skips; "
              f"stages {row['worker_stages']['median']}", flush=True)
    results["run_time_s"] = round(time.perf_counter() - started)
    write_results(arguments.output if arguments.output != "end_to_end" else "worker_capacity", results)


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_cpu_s(pid) for name, pid in pids.items()} | {"bench (signals, requests)": cpu_s()}


def report(name: str, phase: dict[str, Any]) -> None:
    if "cpu_share_of_a_core_by_process" in phase:
        print("CPU, share of one core, by process:", phase["cpu_share_of_a_core_by_process"])
    if "worker_stages" in phase:
        print("worker stages (median ms after the signal's publish):", phase["worker_stages"]["median"])
    s, r = phase["signal_to_command"], phase["request_reply"]
    print(f"{name}: {phase['received']}/{phase['expected']} commands; signal -> command p50 {s['p50_ms']} ms, "
          f"p99 {s['p99_ms']} ms, p99.9 {s['p999_ms']} ms, max {s['max_ms']} ms | request/reply p50 "
          f"{r['p50_ms']} ms, p99 {r['p99_ms']} ms, p99.9 {r['p999_ms']} ms ({r['samples']} samples)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--every", type=float, default=3, help="seconds between signals")
    parser.add_argument("--profile-signals", type=int, default=5, help="signals under cProfile after (0: none)")
    parser.add_argument("--processes", type=int, default=2, help="agent processes")
    parser.add_argument("--no-settle-heap", dest="settle_heap", action="store_false",
                        help="the worker without gc.freeze() after its take-over (the runner freezes)")
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 2, 4, 8),
                        help="adjustment replicas, each its own process (the profile is replica 0's)")
    parser.add_argument("--output", default="end_to_end", help="docs/benchmarks/<output>.json")
    parser.add_argument("--capacity", type=int, nargs="*", metavar="USERS",
                        help="instead: one replica's capacity at these user counts (worker_capacity.json)")
    parsed = parser.parse_args()
    asyncio.run(capacity_main(parsed) if parsed.capacity else main(parsed))
