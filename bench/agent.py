"""The client agent's own cost: CPU and memory per agent, and the wire format.

1. CPU time and RSS per agent: N = 1, 10, 50 real ``Agent`` instances (client/agent.py)
   in one fresh process, each with its own simulated terminal (``app.build_terminal_api``,
   a different simulated broker per agent, the clock on a Wednesday market morning), its
   own SQLite outbox and ledger, and the default intervals (prices every 1 s, account
   checks at the price cadence, heartbeat every 5 s), streaming EURUSD, GBPUSD and USDJPY
   to a real embedded nats-server. The status page and /metrics listeners are off (port 0).
   After the agents are connected and have settled, CPU (``resource.getrusage``, user +
   system, all threads) and RSS (``VmRSS``) are read over ``--seconds``: per agent, CPU as a
   share of one core, RSS as (RSS with N agents - RSS before any) / N.
   Baseline, same run: N raw nats-py connections in a fresh process, each publishing the
   same kind of ClientPriceStream through JetStream every second — the least any agent does.
2. Encoding: a ClientPriceStream of 1,000 ClientPrice (the agent's price buffer holds
   1,000 ticks) vs ``json.dumps``/``json.loads`` of equivalent dicts: µs per batch, bytes.

    python bench/agent.py [--counts 1 10 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from _common import command_line, cpu_s, machine, price_batch, rss_mb, uid_of, write_results

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import prices_pb2

# Wednesday 18 November 2026, 10:00 in New York: the simulated market is open.
WEDNESDAY_MORNING = dt.datetime(2026, 11, 18, 15, 0, tzinfo=dt.UTC).timestamp()
SETTLE_S = 3.0


# ---------------------------------------------------------------------- children
async def run_agents(url: str, count: int, seconds: float) -> dict[str, Any]:
    from mt5fleet.client.adapters.config_file import parse_settings
    from mt5fleet.client.app.agent import Agent
    from mt5fleet.client.sim.broker import BROKERS
    from mt5fleet.launcher.agent import build_terminal_api
    from mt5fleet.proto.domain.clock import AcceleratedClock

    rss0, cpu0 = rss_mb(), cpu_s()  # with every module imported: what follows is the agents'
    brokers = sorted(BROKERS)
    agents = []
    with tempfile.TemporaryDirectory(prefix="bench-agents-") as tmp:
        started = time.perf_counter()
        for i in range(count):
            settings = parse_settings({
                "user_id": f"bench-{i}", "data_dir": str(Path(tmp) / f"agent-{i}"),
                "nats": {"servers": [url]}, "mt5": {"backend": "simulated"},
                "simulated": {"broker": brokers[i % len(brokers)], "seed": i + 1},
                "symbols": {"trading": ["EURUSD", "GBPUSD"], "monitoring": ["USDJPY"]},
                "metrics": {"port": 0}, "status": {"port": 0},
            })
            clock = AcceleratedClock(WEDNESDAY_MORNING, 1.0)
            agent = Agent(settings, build_terminal_api(settings, clock), clock=clock)
            await agent.start()
            agents.append(agent)
        while not all(a.nc is not None and a.nc.is_connected and len(a.executor.symbol_map) >= 3 for a in agents):
            await asyncio.sleep(0.05)
        startup_s = time.perf_counter() - started
        startup_cpu = cpu_s() - cpu0
        await asyncio.sleep(SETTLE_S)
        published0 = sum(_published(a) for a in agents)
        rss1, cpu1, wall1 = rss_mb(), cpu_s(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu2, wall2, rss2 = cpu_s(), time.perf_counter(), rss_mb()
        published = sum(_published(a) for a in agents) - published0
        for agent in agents:
            await agent.stop()
    return _figures(count, rss0, max(rss1, rss2), cpu2 - cpu1, wall2 - wall1, published,
                    startup_s=round(startup_s, 2), startup_cpu_s=round(startup_cpu, 2))


def _published(agent: Any) -> float:
    return sum(sample.value for family in agent.metrics.registry.collect() if family.name.endswith("published")
               for sample in family.samples if sample.name.endswith("_total"))


async def run_raw(url: str, count: int, seconds: float) -> dict[str, Any]:
    import nats

    rss0 = rss_mb()
    clients = [await nats.connect(url, name=f"raw-{i}") for i in range(count)]
    published = 0

    async def publish_every_second(i: int, nc: Any) -> None:
        nonlocal published
        js, sequence = nc.jetstream(), 0
        loop = asyncio.get_running_loop()
        due = loop.time() + i / count
        while True:
            await asyncio.sleep(max(due - loop.time(), 0))
            due += 1.0
            sequence += 1
            batch = price_batch(i, uid_of(i), sequence, int(time.time() * 1000))
            await js.publish(f"tc.{uid_of(i)}.prices", batch.SerializeToString(),
                             headers={"Nats-Msg-Id": f"raw-{i}:{sequence}"})
            published += 1

    tasks = [asyncio.create_task(publish_every_second(i, nc)) for i, nc in enumerate(clients)]
    await asyncio.sleep(SETTLE_S)
    published0 = published
    rss1, cpu1, wall1 = rss_mb(), cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu2, wall2, rss2 = cpu_s(), time.perf_counter(), rss_mb()
    await cancel_and_wait(tasks)  # nats-py may swallow one cancellation mid-publish
    for nc in clients:
        await nc.close()
    return _figures(count, rss0, max(rss1, rss2), cpu2 - cpu1, wall2 - wall1, published - published0)


def _figures(count: int, rss_before: float, rss_with: float, cpu: float, wall: float, published: float,
             **extra: Any) -> dict[str, Any]:
    return {"count": count, "window_s": round(wall, 1), "cpu_s": round(cpu, 3),
            "cpu_share_of_core_per_agent": round(cpu / wall / count, 5),
            "cpu_ms_per_s_per_agent": round(cpu / wall / count * 1000, 3),
            "rss_before_mb": round(rss_before, 1), "rss_with_mb": round(rss_with, 1),
            "rss_mb_per_agent": round((rss_with - rss_before) / count, 2),
            "messages_published_per_s": round(published / wall, 1), **extra}


def child_main(kind: str, url: str, count: int, seconds: float) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    runner = run_agents if kind == "agent" else run_raw
    print(json.dumps(asyncio.run(runner(url, count, seconds))))


def run_child(kind: str, url: str, count: int, seconds: float) -> dict[str, Any]:
    """A fresh interpreter per measurement: its RSS and CPU are the agents' alone."""
    done = subprocess.run([sys.executable, __file__, "--child", kind, url, str(count), str(seconds)],
                          capture_output=True, text=True, timeout=seconds + 300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} x{count} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- encoding
FX = ("EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD", "EURGBP", "EURJPY", "GBPJPY",
      "EURCHF", "AUDJPY", "EURAUD", "GBPCHF", "CADJPY", "CHFJPY", "EURCAD", "AUDCAD", "AUDNZD", "NZDJPY")


def thousand_ticks() -> tuple[prices_pb2.ClientPriceStream, dict[str, Any]]:
    now = 1_795_014_000_000
    prices = []
    for i in range(1000):
        symbol = FX[i % len(FX)]
        digits = 3 if symbol.endswith("JPY") else 5
        base = 150.0 if digits == 3 else 1.1
        bid = round(base + (i % 97) * 10 ** -digits, digits)
        ask = round(bid + 12 * 10 ** -digits, digits)
        prices.append({"symbol": symbol, "bid": bid, "ask": ask, "spread": 12.0, "timestamp": now - 1000 + i,
                       "broker_server": "BenchBroker-Live", "broker_symbol": symbol + ".m", "digits": digits})
    fields = {"user_id": "alice", "broker_name": "Bench Broker Ltd", "account_number": "5000001",
              "batch_timestamp": now, "sequence": 4242}
    message = prices_pb2.ClientPriceStream(prices=[prices_pb2.ClientPrice(**p) for p in prices], **fields)
    return message, {**fields, "prices": prices}


def per_op_us(statement: Any, repeat: int = 7) -> float:
    """Median over ``repeat`` timings of ~0.2 s each, µs per call."""
    timer = timeit.Timer(statement)
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(repeat, number)) * 1e6


def bench_encoding() -> dict[str, Any]:
    from google.protobuf.internal import api_implementation

    message, as_dict = thousand_ticks()
    raw = message.SerializeToString()
    text = json.dumps(as_dict).encode()
    assert json.loads(text) == as_dict and prices_pb2.ClientPriceStream.FromString(raw) == message
    figures = {
        "ticks": 1000, "protobuf_backend": api_implementation.Type(),
        "protobuf_bytes": len(raw), "json_bytes": len(text),
        "protobuf_encode_us": round(per_op_us(message.SerializeToString), 1),
        "json_encode_us": round(per_op_us(lambda: json.dumps(as_dict).encode()), 1),
        "protobuf_decode_us": round(per_op_us(lambda: prices_pb2.ClientPriceStream.FromString(raw)), 1),
        "json_decode_us": round(per_op_us(lambda: json.loads(text)), 1),
        # Decoding into fields a program reads: every tick's bid touched.
        "protobuf_decode_read_us": round(per_op_us(
            lambda: sum(p.bid for p in prices_pb2.ClientPriceStream.FromString(raw).prices)), 1),
        "json_decode_read_us": round(per_op_us(lambda: sum(p["bid"] for p in json.loads(text)["prices"])), 1),
    }
    figures["bytes_json_over_protobuf"] = round(len(text) / len(raw), 2)
    for op in ("encode", "decode", "decode_read"):
        figures[f"{op}_json_over_protobuf"] = round(figures[f"json_{op}_us"] / figures[f"protobuf_{op}_us"], 2)
    return figures


# ---------------------------------------------------------------------- main
def main(arguments: argparse.Namespace) -> None:
    started = time.perf_counter()
    with EmbeddedNats() as server:
        async def layout() -> None:
            import nats

            nc = await nats.connect(server.url)
            await bootstrap.bootstrap(nc.jetstream(), subjects.build_layout())
            await nc.close()
        asyncio.run(layout())
        results: dict[str, Any] = {
            "benchmark": "agent",
            "command": command_line("agent.py", sys.argv[1:]),
            "machine": machine(server.version),
            "model": "N real Agent instances in one fresh process, simulated terminals (one broker each, "
                     "round-robin over client/sim/broker.py), default intervals, 3 streamed symbols, status/metrics "
                     "listeners off; CPU = getrusage user+sys of the process over the window / N; RSS = (VmRSS with "
                     "N agents - VmRSS before) / N",
            "baseline": "N raw nats-py connections in one fresh process, each js.publish of a 3-quote "
                        "ClientPriceStream every second",
            "per_count": {},
        }
        for count in arguments.counts:
            agent = run_child("agent", server.url, count, arguments.seconds)
            raw = run_child("raw", server.url, count, arguments.seconds)
            row = {"agent": agent, "raw": raw,
                   "cpu_ratio_agent_over_raw": round(agent["cpu_s"] / max(raw["cpu_s"], 1e-9), 2),
                   "rss_ratio_agent_over_raw": round(agent["rss_mb_per_agent"] / max(raw["rss_mb_per_agent"], 1e-9),
                                                     2)}
            results["per_count"][str(count)] = row
            print(f"{count} agents: {agent['cpu_ms_per_s_per_agent']} ms CPU/s and {agent['rss_mb_per_agent']} MB "
                  f"each ({agent['messages_published_per_s']} msg/s in all) | raw: {raw['cpu_ms_per_s_per_agent']} "
                  f"ms CPU/s and {raw['rss_mb_per_agent']} MB each | CPU ratio {row['cpu_ratio_agent_over_raw']}",
                  flush=True)
    if len(arguments.counts) > 1:  # what one more agent costs, start-up costs of the first one aside
        small, large = sorted(arguments.counts)[-2:]
        rows = results["per_count"]

        def grown(count: int, kind: str) -> float:
            row = rows[str(count)][kind]
            return row["rss_with_mb"] - row["rss_before_mb"]
        results["marginal_rss_mb_per_agent"] = {
            "between": [small, large],
            "agent": round((grown(large, "agent") - grown(small, "agent")) / (large - small), 2),
            "raw": round((grown(large, "raw") - grown(small, "raw")) / (large - small), 3)}
        print("marginal RSS per agent:", results["marginal_rss_mb_per_agent"])
    results["encoding"] = bench_encoding()
    e = results["encoding"]
    print(f"1,000 ticks: protobuf {e['protobuf_bytes']} B, encode {e['protobuf_encode_us']} µs, decode "
          f"{e['protobuf_decode_us']} µs | JSON {e['json_bytes']} B, encode {e['json_encode_us']} µs, decode "
          f"{e['json_decode_us']} µs ({e['protobuf_backend']} backend)")
    results["run_time_s"] = round(time.perf_counter() - started)
    print(f"run time {results['run_time_s']} s")
    write_results(arguments.output, results)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--output", default="agent", help="docs/benchmarks/<output>.json")
    main(parser.parse_args())
