"""Issue 15: adjustment replicas share users — price CPU per replica with 1, 2 and 4 replicas.

Against a real embedded nats-server, for each replica count R (``--replicas 1 2 4``):

* N users (``--users``) with configs, specs and accounts as in bench/end_to_end.py, and
  every user's 3-quote ClientPriceStream core-published into TC_PRICES once a second from
  this process over 8 connections (the server stores them in TC_PRICES as it stores the
  agents' own);
* R real ``AdjustWorker`` replicas, each in its own process (``start()``: leases, the
  partitions shared out, only the owned partitions' users decoded and prices followed);
* once every replica knows the users of its partitions: each replica's CPU over
  ``--window`` seconds on prices alone (``/proc/<pid>/stat``), then ``--signals`` signals
  ``--every`` s apart: commands stored (the replicas' metrics) by ``--every`` s after the
  last, ``stale_quote`` skips, and per-signal stage times.

Baseline, same run: the 1-replica figure (every user's prices in one process), against
which the per-replica CPU of R replicas should fall ~1/R; and the server's CPU.

    python bench/scale_out.py [--users 10000] [--replicas 1 2 4] [--window 10] [--signals 3] [--every 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

import nats
from _common import (
    command_line,
    cpu_s,
    machine,
    now_ms,
    origin,
    process_cpu_s,
    raise_nofile,
    server_pid,
    set_origin,
    universal_signal,
    write_results,
)
from end_to_end import metrics_of, offer_prices, populate, stage_summary, trace_stages

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.workers.app.adjust_service import AdjustWorker


# ---------------------------------------------------------------------- one replica's process
def _replica_child(conn: Any, url: str, origin_at: float, replica_id: str, users: int) -> None:
    try:
        asyncio.run(_replica_main(conn, url, origin_at, replica_id, users))
    except Exception as exc:
        conn.send({"error": repr(exc)})


async def _replica_main(conn: Any, url: str, origin_at: float, replica_id: str, users: int) -> None:
    set_origin(origin_at)
    nc = await natsconn.connect(natsconn.NatsSettings(servers=(url,), name=f"adjust-{replica_id}"))
    worker = AdjustWorker(nc, replica_id=replica_id, now_ms=now_ms, lease_ttl_ms=3_000)
    stages = trace_stages(worker)
    await worker.start()
    loop = asyncio.get_running_loop()
    cpu_at = cpu_s()
    while True:
        while not await loop.run_in_executor(None, conn.poll, 0.2):
            pass
        command = conn.recv()
        state = worker.state
        if command == "status":
            conn.send({"owned": sorted(worker.owned), "partitioned": state.partitioned_prices,
                       "policies": len(state.policies), "quotes": len(state.quotes), "specs": len(state.specs),
                       "accounts": len(state.accounts), "pid": os.getpid()})
        elif command == "mark":
            cpu_at = cpu_s()
            conn.send({"ok": True})
        elif command == "report":
            conn.send({"cpu_s": cpu_s() - cpu_at, "metrics": metrics_of(worker), "stages": stages})
        elif command == "stop":
            conn.send({"ok": True})
            break
    await worker.stop()
    await nc.close()


class Replica:
    def __init__(self, url: str, replica_id: str, users: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.replica_id = replica_id
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_replica_child, args=(child, url, origin(), replica_id, users),
                                       daemon=True)
        self.process.start()

    async def ask(self, message: Any, timeout: float = 120) -> dict[str, Any]:
        self.conn.send(message)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while not await loop.run_in_executor(None, self.conn.poll, 0.5):
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"replica {self.replica_id}: no answer (alive {self.process.is_alive()})")
        answer = self.conn.recv()
        if "error" in answer:
            raise RuntimeError(f"replica {self.replica_id}: {answer['error']}")
        return answer

    async def join(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 30)


def expected_users(owned: list[int], users: int) -> int:
    from _common import uid_of
    return sum(1 for i in range(users) if subjects.partition_of(uid_of(i)) in owned)


async def all_ready(replicas: list[Replica], users: int, timeout: float = 300) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = [await r.ask("status") for r in replicas]
        owned = sum(len(s["owned"]) for s in statuses)
        ready = owned == subjects.ADJUST_PARTITIONS and all(s["owned"] for s in statuses) and all(
            s["policies"] == s["quotes"] == s["specs"] == s["accounts"] == expected_users(s["owned"], users)
            for s in statuses)
        if ready:
            return statuses
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not ready: {statuses}")
        await asyncio.sleep(1)


async def run(users: int, count: int, window: float, signals: int, every: float) -> dict[str, Any]:
    with EmbeddedNats() as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await bootstrap.bootstrap(js, subjects.build_layout())
        await populate(js, users)
        publishers = [await nats.connect(server.url) for _ in range(8)]
        stop, sent = asyncio.Event(), [0]
        offering = asyncio.create_task(offer_prices(publishers, users, stop, sent))
        await asyncio.sleep(2)
        replicas = [Replica(server.url, f"r{n}", users) for n in range(count)]
        statuses = await all_ready(replicas, users)
        await asyncio.sleep(3)
        load_at_start = os.getloadavg()
        spid = server_pid(server)
        for replica in replicas:
            await replica.ask("mark")
        server_cpu, offered, started = process_cpu_s(spid), sent[0], time.monotonic()
        await asyncio.sleep(window)
        quiet = [await r.ask("report") for r in replicas]
        quiet_s = time.monotonic() - started
        server_quiet = (process_cpu_s(spid) - server_cpu) / quiet_s
        batches_per_s = (sent[0] - offered) / quiet_s
        for replica in replicas:
            await replica.ask("mark")
        started = time.monotonic()
        sent_at: dict[str, float] = {}
        for n in range(signals):
            signal_id = f"scale-{count}-{n}"
            sent_at[signal_id] = time.monotonic()
            await js.publish(subjects.signal_subject("EURUSD"), universal_signal(signal_id, ttl_ms=120_000)
                             .SerializeToString(), headers={"Nats-Msg-Id": signal_id})
            await asyncio.sleep(every)
        busy = [await r.ask("report") for r in replicas]
        busy_s = time.monotonic() - started
        stop.set()
        await offering
        for replica in replicas:
            await replica.ask("stop")
            await replica.join()
        for nc in (*publishers, client):
            await nc.close()

    def total(name: str) -> int:
        return int(sum(b["metrics"].get(name, 0) for b in busy))

    per_replica = [round(q["cpu_s"] / quiet_s, 3) for q in quiet]
    stages = [tuple(s) for b in busy for s in b["stages"]]
    return {
        "replicas": count, "users": users, "load_average_at_start": [round(x, 2) for x in load_at_start],
        "partitions_by_replica": [s["owned"] for s in statuses],
        "users_by_replica": [s["policies"] for s in statuses],
        "prices_partitioned": all(s["partitioned"] for s in statuses),
        "price_batches_per_s": round(batches_per_s),
        "cpu_share_per_replica_prices_only": per_replica,
        "cpu_share_per_replica_prices_only_mean": round(statistics.mean(per_replica), 3),
        "cpu_us_per_batch_per_replica": round(statistics.mean(per_replica) * 1e6 / max(batches_per_s, 1), 1),
        "cpu_share_per_replica_with_signals": [round(b["cpu_s"] / busy_s, 3) for b in busy],
        "server_cpu_share_prices_only": round(server_quiet, 3),
        "commands_expected": users * signals,
        "commands_stored_in_time": total("mt5fleet_worker_commands_published_total"),
        "stale_quote_skips": total("mt5fleet_worker_skips_total{reason=stale_quote}"),
        "no_quote_skips": total("mt5fleet_worker_skips_total{reason=no_quote}"),
        "worker_stages": stage_summary(stages, sent_at)["median"],
    }


async def main(arguments: argparse.Namespace) -> None:
    raise_nofile()
    started = time.perf_counter()
    with EmbeddedNats() as server:
        version = server.version
    results: dict[str, Any] = {
        "benchmark": "scale_out", "command": command_line("scale_out.py", sys.argv[1:]),
        "machine": machine(version),
        "model": "R AdjustWorker replicas, each its own process (start(): leases share the 8 partitions out); "
                 "N users' configs/specs/accounts as in bench/end_to_end.py; every user's 3-quote ClientPriceStream "
                 "core-published into TC_PRICES once a second from the bench process over 8 connections",
        "baseline": "1 replica in the same run (every user's prices in one process)",
        "runs": [],
    }
    for count in arguments.replicas:
        row = await run(arguments.users, count, arguments.window, arguments.signals, arguments.every)
        results["runs"].append(row)
        print(f"{count} replica(s), {arguments.users} users ({row['price_batches_per_s']} batches/s, load "
              f"{row['load_average_at_start']}): CPU per replica on prices {row['cpu_share_per_replica_prices_only']} "
              f"(mean {row['cpu_share_per_replica_prices_only_mean']}, {row['cpu_us_per_batch_per_replica']} us per "
              f"offered batch), with signals {row['cpu_share_per_replica_with_signals']}; server "
              f"{row['server_cpu_share_prices_only']}; commands {row['commands_stored_in_time']}/"
              f"{row['commands_expected']}, stale {row['stale_quote_skips']}, no quote {row['no_quote_skips']}; "
              f"stages {row['worker_stages']}", flush=True)
    base = results["runs"][0]["cpu_share_per_replica_prices_only_mean"] if results["runs"] else 0
    for row in results["runs"]:
        row["per_replica_vs_one"] = round(row["cpu_share_per_replica_prices_only_mean"] / base, 3) if base else None
    results["run_time_s"] = round(time.perf_counter() - started)
    print("per-replica price CPU vs 1 replica:", [(r["replicas"], r["per_replica_vs_one"]) for r in results["runs"]])
    write_results(arguments.output, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--window", type=float, default=10.0, help="seconds of prices-only CPU measurement")
    parser.add_argument("--signals", type=int, default=3)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between signals")
    parser.add_argument("--output", default="scale_out", help="docs/benchmarks/<output>.json")
    asyncio.run(main(parser.parse_args()))
