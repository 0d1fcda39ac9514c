"""Command delivery to connected agents (SPEC §2.2), against a real embedded nats-server.

Live path, as built: the real AdjustWorker adjusts one signal for every user
(``AdjustWorker.commands_for``, timed apart) and publishes the commands with its own
publish code, in the fan-out's chunks (``AdjustWorker.publish_commands``: one batch of
JetStream publishes to ``tc.<uid>.commands`` per chunk, stream TC_COMMANDS,
``Nats-Msg-Id`` = command id, the chunk's acks awaited together); every agent holds a
plain subscription on its own ``tc.<uid>.commands`` and receives the stored message's live
copy. Measured: from the first publish until the last agent has decoded its command.

Baseline, same run, same agents and payloads: a core NATS publish of each command to the
same subjects (no JetStream). Rounds alternate the order; the median round is reported.

Agents (model): each simulated agent is one real NATS connection (``natsconn.connect``, as
the agent makes it) with one plain subscription, spread over ``--processes`` child
processes; at 10,000 agents that is 10,000 TCP connections to the server (RLIMIT_NOFILE
raised to its hard limit). On this 2-core machine the agents' receive work shares the
cores with the server and the worker; in production it is spread over 10,000 machines.

Contrast (SPEC's warning): per-user live filtered JetStream consumers (ephemeral push,
deliver new, explicit ack) at 100 and 1,000 users, ``--per-user`` commands each, vs plain
subscriptions on the same server setup and the same published commands.

    python bench/delivery.py [--scales 1000 10000] [--rounds 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from typing import Any

import nats
from _common import (
    AgentPool,
    command_line,
    latency_summary,
    machine,
    now_ms,
    populate,
    process_cpu_s,
    raise_nofile,
    server_pid,
    signal,
    uid_of,
    write_results,
)

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.workers.app.adjust_service import FAN_OUT_CHUNK, FIRST_CHUNK, PUBLISH_CONCURRENCY, AdjustWorker


async def deliver(pool: AgentPool, per_uid: int, publish: Any, expected: int, pid: int) -> dict[str, Any]:
    """Arm the agents, run ``publish``; when did the last agent have its command(s)? And what
    CPU did the server (process ``pid``) spend meanwhile?"""
    await pool.arm(per_uid)
    server_cpu = process_cpu_s(pid)
    t0 = time.monotonic()
    await publish()
    published = time.monotonic() - t0
    received = await pool.collect(timeout=120)
    server_cpu = process_cpu_s(pid) - server_cpu
    offsets = [at - t0 for at, _ in received]
    summary = latency_summary(offsets)
    last = max(offsets) if offsets else float("nan")
    return {"expected": expected, "received": len(offsets), "publish_done_s": round(published, 3),
            "last_received_s": round(last, 3), "per_s": round(len(offsets) / last) if offsets else 0,
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_us_per_message": round(server_cpu / max(len(offsets), 1) * 1e6, 1),
            "receipt": summary}


async def publish_live(worker: AdjustWorker, commands: list[Any]) -> None:
    """What the worker does with a signal's recorded commands (``AdjustWorker._fan_out``):
    the first chunk of 16, then chunks of 64, each published in one batch, all in flight."""
    chunks, start, size = [], 0, FIRST_CHUNK
    while start < len(commands):
        chunks.append(commands[start:start + size])
        start, size = start + size, FAN_OUT_CHUNK
    await asyncio.gather(*(worker.publish_commands(chunk) for chunk in chunks))


async def publish_jetstream(js: Any, commands: list[Any]) -> None:
    """Raw nats-py: the same JetStream publishes with the same ids and concurrency, no worker code."""
    slots = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    async def one(command: Any) -> None:
        async with slots:
            await js.publish(subjects.user_subject(command.user_id, subjects.Channel.COMMANDS),
                             command.SerializeToString(), timeout=10, headers={"Nats-Msg-Id": command.command_id})
    await asyncio.gather(*(one(c) for c in commands))


async def publish_core(client: Any, payloads: list[tuple[str, bytes]]) -> None:
    for subject, payload in payloads:
        await client.publish(subject, payload)
    await client.flush()


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(rounds, key=lambda r: r["last_received_s"])
    return ordered[(len(ordered) - 1) // 2]


def raw_copies(commands: list[Any]) -> list[Any]:
    """The same commands under other ids: JetStream would drop the worker's ids as duplicates."""
    copies = []
    for command in commands:
        copy = type(command)()
        copy.CopyFrom(command)
        copy.command_id += "-raw"
        copies.append(copy)
    return copies


def commands_of(worker: AdjustWorker, signal_id: str) -> tuple[list[Any], float]:
    started = time.perf_counter()
    sig = signal(signal_id)
    commands = [c for p in range(subjects.ADJUST_PARTITIONS) for c in worker.commands_for(sig, p, now_ms())]
    return commands, time.perf_counter() - started


async def bench_scale(agents: int, rounds: int, warmup: int, processes: int) -> dict[str, Any]:
    uids = [uid_of(i) for i in range(agents)]
    with EmbeddedNats() as server:
        client = await nats.connect(server.url)
        await bootstrap.bootstrap(client.jetstream(), subjects.build_layout())
        worker = AdjustWorker(client, replica_id="bench", now_ms=now_ms)
        populate(worker, agents)
        async with AgentPool(server.url, uids, processes=processes) as pool:
            print(f"{agents} agents connected in {pool.connect_s:.1f} s over {processes} processes", flush=True)
            live_rounds, js_rounds, core_rounds, adjust_s = [], [], [], []
            for r in range(-warmup, rounds):
                commands, adjusting = commands_of(worker, f"delivery-{agents}-{r}")
                if r >= 0:
                    adjust_s.append(adjusting)
                payloads = [(subjects.user_subject(c.user_id, subjects.Channel.COMMANDS), c.SerializeToString())
                            for c in commands]

                live = functools.partial(publish_live, worker, commands)
                raw_js = functools.partial(publish_jetstream, client.jetstream(), raw_copies(commands))
                core = functools.partial(publish_core, client, payloads)
                order = [("live", live, live_rounds), ("jetstream", raw_js, js_rounds), ("core", core, core_rounds)]
                for name, publish, rows in order[r % 3:] + order[:r % 3]:
                    row = await deliver(pool, 1, publish, agents, server_pid(server))
                    if r >= 0:
                        rows.append(row)
                    print(f"  round {r if r >= 0 else 'warm-up'} {name}: last agent at {row['last_received_s']:.3f} s "
                          f"({row['received']}/{agents}), {row['per_s']} commands/s", flush=True)
        await client.close()
    live, raw_js, core = median_round(live_rounds), median_round(js_rounds), median_round(core_rounds)
    return {
        "agents": agents, "processes": processes, "connections": agents, "subscriptions_per_connection": 1,
        "connect_all_s": round(pool.connect_s, 1), "agent_process_rss_mb": [round(x) for x in pool.child_rss_mb],
        "adjust_only_s_median": round(statistics.median(adjust_s), 3),
        "live_last_received_s": live["last_received_s"], "live_commands_per_s": live["per_s"],
        "core_last_received_s": core["last_received_s"], "core_messages_per_s": core["per_s"],
        "ratio_to_baseline": round(core["last_received_s"] / live["last_received_s"], 3),
        "live_server_cpu_us_per_command": live["server_cpu_us_per_message"],
        "core_server_cpu_us_per_message": core["server_cpu_us_per_message"],
        "jetstream_raw_last_received_s": raw_js["last_received_s"], "jetstream_raw_per_s": raw_js["per_s"],
        "ratio_to_jetstream_raw": round(raw_js["last_received_s"] / live["last_received_s"], 3),
        "live_rounds_last_s": [r["last_received_s"] for r in live_rounds],
        "jetstream_raw_rounds_last_s": [r["last_received_s"] for r in js_rounds],
        "core_rounds_last_s": [r["last_received_s"] for r in core_rounds],
        "live_median_round": live, "jetstream_raw_median_round": raw_js, "core_median_round": core,
    }


async def bench_consumers(users: int, per_user: int, rounds: int, processes: int) -> dict[str, Any]:
    """Plain subscriptions vs per-user live filtered consumers, each on a fresh server."""
    out: dict[str, Any] = {"users": users, "commands": users * per_user}
    for mode in ("plain", "consumer"):
        with EmbeddedNats() as server:
            client = await nats.connect(server.url)
            await bootstrap.bootstrap(client.jetstream(), subjects.build_layout())
            worker = AdjustWorker(client, replica_id="bench", now_ms=now_ms)
            populate(worker, users)
            started = time.perf_counter()
            async with AgentPool(server.url, [uid_of(i) for i in range(users)], processes=processes,
                                 mode=mode) as pool:
                setup = time.perf_counter() - started
                rows = []
                for r in range(rounds):
                    commands = [c for k in range(per_user)
                                for c in commands_of(worker, f"contrast-{mode}-{r}-{k}")[0]]
                    publish = functools.partial(publish_live, worker, commands)
                    rows.append(await deliver(pool, per_user, publish, len(commands), server_pid(server)))
                    print(f"  {users} users, {mode}: {rows[-1]['received']}/{len(commands)} in "
                          f"{rows[-1]['last_received_s']:.3f} s = {rows[-1]['per_s']} msg/s", flush=True)
            await client.close()
        best = median_round(rows)
        out[mode] = {"setup_s": round(setup, 2), "last_received_s": best["last_received_s"],
                     "msg_per_s": best["per_s"], "received": best["received"],
                     "server_cpu_us_per_message": statistics.median(r["server_cpu_us_per_message"] for r in rows),
                     "rounds_last_s": [r["last_received_s"] for r in rows],
                     "receipt": best["receipt"]}
    out["consumer_vs_plain"] = round(out["plain"]["last_received_s"] / out["consumer"]["last_received_s"], 3)
    return out


async def main(arguments: argparse.Namespace) -> None:
    limit = raise_nofile()
    started = time.perf_counter()
    with EmbeddedNats() as server:
        version = server.version
    results: dict[str, Any] = {
        "benchmark": "delivery",
        "command": command_line("delivery.py", arguments.argv),
        "machine": machine(version),
        "rlimit_nofile": limit,
        "live_path": "real AdjustWorker: commands_for (timed apart) then AdjustWorker.publish_commands "
                     f"in the fan-out's chunks ({FIRST_CHUNK}, then {FAN_OUT_CHUNK}: one batch of JetStream "
                     "publishes to tc.<uid>.commands per chunk, stream TC_COMMANDS, Nats-Msg-Id = command id, "
                     "acks awaited together, every chunk in flight); "
                     "agents hold a plain subscription on tc.<uid>.commands",
        "baseline": "core NATS publish of the same payloads to the same subjects, same agents, same run; also "
                    "raw nats-py JetStream publish of the same commands (ids suffixed -raw), 256 in flight",
        "agent_model": f"one real NATS connection per agent (natsconn.connect), one plain subscription each, "
                       f"spread over {arguments.processes} agent processes; receipt = callback decoded the "
                       f"TradingCommand, time.monotonic() (one clock for all processes)",
        "consumer_model": "per-user ephemeral push consumer filtered to tc.<uid>.commands, deliver new, explicit "
                          "ack (nats-py js.subscribe), one per agent connection",
        "scales": {},
    }
    for agents in arguments.scales:
        print(f"delivery to {agents} agents", flush=True)
        results["scales"][str(agents)] = await bench_scale(agents, arguments.rounds, arguments.warmup,
                                                           arguments.processes)
    results["per_user_consumers"] = {}
    for users in arguments.consumer_scales:
        print(f"contrast: per-user consumers at {users}", flush=True)
        results["per_user_consumers"][str(users)] = await bench_consumers(
            users, arguments.per_user, arguments.rounds, arguments.processes)
    results["run_time_s"] = round(time.perf_counter() - started)
    summary = {k: {key: v[key] for key in ("live_last_received_s", "live_commands_per_s", "core_last_received_s",
                                           "core_messages_per_s", "ratio_to_baseline")}
               for k, v in results["scales"].items()}
    print("summary:", summary)
    print("consumers:", {k: {m: v[m]["msg_per_s"] for m in ("plain", "consumer")}
                         for k, v in results["per_user_consumers"].items()})
    print(f"run time {results['run_time_s']} s")
    write_results(arguments.output, results)


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--consumer-scales", type=int, nargs="*", default=[100, 1_000])
    parser.add_argument("--per-user", type=int, default=5, help="commands per user in the consumer contrast")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--processes", type=int, default=2, help="agent processes")
    parser.add_argument("--output", default="delivery", help="docs/benchmarks/<output>.json")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    asyncio.run(main(args))
