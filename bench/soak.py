"""Soak (issue 12): the whole platform for a long run on an accelerated market clock, with faults
injected at random, then the books: commands sent, executed, duplicated (must be 0), lost (must
be 0), stale-quote skips, and the memory of every process over time. Not a test, not in CI.

    python bench/soak.py                                   # 1,000 agents, 30 min of market time
    python bench/soak.py --agents 100 --minutes 4 --speed 2 --fault-every 15

The platform is the demo's own (``launcher/demo``: the operator in local mode scaling the
adjustment-worker pool, the market-data, feedback, health and catch-up workers, one real agent
per user on a simulated terminal of its broker, the signal engine), in this process, with the
nats-server (JWT operator mode, TLS) as a process of its own. The market clock starts on a
weekday 10:00 New York and runs ``--speed`` times faster than the wall clock; the agents'
intervals (prices every 0.5 s, account every 5 s, heartbeat every 2 s) are market seconds.

Faults, one every ``--fault-every`` wall seconds, chosen at random (seeded) from ``--faults``:
* ``nats-restart``: the nats-server killed (SIGKILL), down for ``--nats-down`` s, restarted on
  its port and store;
* ``worker-kill``: an adjustment-worker replica stopped dead (its fan-out cancelled where it
  is, its leases not handed over, its connection closed), a new replica started in its place
  as a Deployment would;
* ``agent-kill``: an agent stopped dead (tasks cancelled, connection closed without a flush),
  a new agent started on the same data folder and terminal after ``--agent-down`` s;
* ``ipc-drop``: an agent's MT5 terminal connection failing (IPC error) for ``--ipc-down`` s.

At the end the signal engine stops, every fault is repaired, and once everything settled (or
``--settle`` s passed) the streams are read: every signal stored was decided once for every
user, every recorded command stored once and answered by one execution report, and no
terminal executed an order of one command twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import random
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import OUT, command_line, machine, raise_nofile, rss_mb

from mt5fleet.client.app.agent import Agent
from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5
from mt5fleet.launcher.demo import platform as demo_platform
from mt5fleet.launcher.demo.agents import DemoUser, agent_settings
from mt5fleet.launcher.demo.platform import Demo, DemoOptions, route_logging
from mt5fleet.launcher.demo.services import RunPaths, quietly
from mt5fleet.launcher.demo.view import DemoStats, Endpoint
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.sessions import NEW_YORK
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import commands_pb2, execution_pb2, signals_pb2
from mt5fleet.workers.adapters import decision_store

log = logging.getLogger("mt5fleet.soak")

FAULTS = ("nats-restart", "worker-kill", "agent-kill", "ipc-drop")
FILLED = (execution_pb2.EXECUTION_STATUS_FILLED, execution_pb2.EXECUTION_STATUS_PARTIAL)
DUPLICATE = execution_pb2.EXECUTION_STATUS_DUPLICATE
NOT_BY_A_COMMAND = (mt5.DEAL_REASON_SL, mt5.DEAL_REASON_TP, mt5.DEAL_REASON_SO)
MB = 1024 * 1024


# ---------------------------------------------------------------------- what the run counts live
class SoakStats(DemoStats):
    """The demo's view counters without its per-signal tables (they would grow for the whole run
    and be counted as the platform's memory): totals only. The books come from the streams."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: Counter = Counter()

    def on_signal(self, signal: signals_pb2.UniversalSignal, digits: int) -> None:
        self.seen["signals"] += 1

    def on_command(self, command: commands_pb2.TradingCommand, digits: int) -> None:
        self.seen["commands"] += 1

    def on_execution(self, report: execution_pb2.ExecutionReport) -> None:
        self.seen["reports"] += 1

    def on_skip(self, signal_id: str, user_id: str, reason: str) -> None:
        self.skips[reason] += 1


@dataclass
class AgentSlot:
    """One user's agent and the simulated terminal (its broker account) it runs against: the
    terminal outlives an agent killed and started again, as a real MT5 terminal would."""
    user: DemoUser
    settings: Any
    terminal: SimulatedMetaTrader5
    agent: Agent | None = None
    restarts: int = 0


@dataclass
class MemorySample:
    at_s: float
    market: str
    rss_mb: dict[str, float]                                         # per process
    stored_mb: dict[str, float] = field(default_factory=dict)        # what JetStream holds (/jsz), consumers


@dataclass
class FaultLog:
    injected: Counter = field(default_factory=Counter)
    events: list[tuple[float, str, str]] = field(default_factory=list)   # (wall s, fault, detail)


# ---------------------------------------------------------------------- the platform
class SoakPlatform(Demo):
    """The demo, keeping the handles faults need: the nats-server, every agent and terminal."""

    def __init__(self, options: DemoOptions, paths: RunPaths, stats: SoakStats, speed: float) -> None:
        super().__init__(options, paths, stats)
        self.clock.factor = speed
        self.server: EmbeddedNats | None = None
        self.view_nc: Any = None                  # the demo's own service connection
        self.slots: dict[str, AgentSlot] = {}

    async def _start_nats(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        with self._keeping_the_server():
            service, self.view_nc = await super()._start_nats(stack)
        return service, self.view_nc

    @contextlib.contextmanager
    def _keeping_the_server(self) -> Iterator[None]:
        """The demo starts its server through ``platform.start_nats`` and keeps only its URL:
        this keeps the server too (to kill and restart it)."""
        start = demo_platform.start_nats

        def keep(*args: Any, **kwargs: Any) -> EmbeddedNats:
            self.server = start(*args, **kwargs)
            return self.server
        demo_platform.start_nats = keep
        try:
            yield
        finally:
            demo_platform.start_nats = start

    async def _start_agent(self, stack: AsyncExitStack, index: int, user: DemoUser) -> Endpoint:
        """``agents.start_agent`` without the status page and /metrics (a thousand of each would
        be a thousand ports and servers the soak does not read), keeping the agent and terminal."""
        settings = agent_settings(user, self.paths, self.operator.secrets, self.servers, seed=index + 1)
        broker = BROKERS[user.preset].evolve(login=user.login, password=user.password)
        slot = AgentSlot(user, settings, SimulatedMetaTrader5(broker, self.feed, clock=self.clock.now, seed=index + 1))
        self.slots[user.user_id] = slot
        await self.start_slot(slot)

        async def stop() -> None:
            if slot.agent is not None:
                await quietly(f"agent {user.user_id}", slot.agent.stop, 10)
        stack.push_async_callback(stop)
        return Endpoint(f"agent {user.user_id}", "")

    async def start_slot(self, slot: AgentSlot) -> None:
        slot.agent = Agent(slot.settings, slot.terminal, clock=self.clock)
        await slot.agent.start()


# ---------------------------------------------------------------------- faults
async def kill_agent(agent: Agent) -> None:
    """As near a kill -9 as one process allows: every task cancelled where it is, the NATS
    connection closed without flushing, the outbox and ledger files closed as they are."""
    await cancel_and_wait(list(agent._tasks))
    if agent.nc is not None:
        with contextlib.suppress(Exception):
            await agent.nc.close()
    agent.mt5.shutdown()
    agent.outbox.close()
    agent.ledger.close()


class Faults:
    def __init__(self, platform: SoakPlatform, args: argparse.Namespace, started: float) -> None:
        self.platform, self.args, self.started = platform, args, started
        self.rng = random.Random(args.seed)
        self.log = FaultLog()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """One fault every ``--fault-every`` s until told to stop; a fault always ends repaired."""
        kinds = [k for k in self.args.faults.split(",") if k and k != "none"]
        while kinds and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.args.fault_every)
            if self.stopping.is_set():
                return
            kind = self.rng.choice(kinds)
            detail = await getattr(self, kind.replace("-", "_"))()
            self.log.injected[kind] += 1
            self.log.events.append((round(time.monotonic() - self.started, 1), kind, detail))
            log.warning("soak fault %s: %s", kind, detail)
            print(f"[{time.monotonic() - self.started:7.1f}s] fault {kind}: {detail}", flush=True)

    async def nats_restart(self) -> str:
        server = self.platform.server
        server.kill()
        await asyncio.sleep(self.args.nats_down)
        began = time.monotonic()
        await asyncio.to_thread(server.start)
        return (f"nats-server killed, down {self.args.nats_down:g} s, healthy "
                f"{time.monotonic() - began:.1f} s after its start")

    async def worker_kill(self) -> str:
        pool = self.platform.pool
        if not pool.running:
            return "no replica running"
        index = self.rng.randrange(len(pool.running))
        worker, stack, endpoint = pool.running.pop(index)
        owned = len(worker.owned)
        await worker.stop(release=False)        # the fan-out cancelled where it is; leases kept
        with contextlib.suppress(Exception):
            await worker.nc.close()
        await quietly(endpoint.name, stack.aclose)
        await pool.scale(len(pool.running) + 1)  # the Deployment starts a new pod
        return f"{endpoint.name} killed ({owned} partition(s) left to lapse), a new replica started"

    async def agent_kill(self) -> str:
        slot = self.rng.choice(list(self.platform.slots.values()))
        await kill_agent(slot.agent)
        await asyncio.sleep(self.args.agent_down)
        slot.restarts += 1
        await self.platform.start_slot(slot)
        return f"agent {slot.user.user_id} killed, restarted after {self.args.agent_down:g} s"

    async def ipc_drop(self) -> str:
        slot = self.rng.choice(list(self.platform.slots.values()))
        slot.terminal.fail_ipc()
        await asyncio.sleep(self.args.ipc_down)
        slot.terminal.restore_ipc()
        return f"terminal of {slot.user.user_id}: IPC down {self.args.ipc_down:g} s"


# ---------------------------------------------------------------------- memory
def rss_of(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def jetstream_usage(server: EmbeddedNats | None) -> dict[str, float]:
    """What the server says it holds (/jsz): JetStream memory and file storage (MB) and its
    consumers; {} if it does not answer (restarting)."""
    if server is None or not server.running:
        return {}
    try:
        with urllib.request.urlopen(f"{server.monitor_url}/jsz", timeout=2) as response:
            jsz = json.loads(response.read())
    except (OSError, ValueError):
        return {}
    return {"jetstream memory": round(jsz.get("memory", 0) / MB, 1),
            "jetstream file": round(jsz.get("storage", 0) / MB, 1), "consumers": jsz.get("consumers", 0)}


async def sample_memory(platform: SoakPlatform, stats: SoakStats, samples: list[MemorySample], every_s: float,
                        started: float) -> None:
    while True:
        server_pid = platform.server.pid if platform.server is not None else None
        market = dt.datetime.fromtimestamp(platform.clock.now(), NEW_YORK).strftime("%a %H:%M")
        usage = await asyncio.to_thread(jetstream_usage, platform.server)
        sample = MemorySample(round(time.monotonic() - started, 1), market,
                              {"python (platform + agents)": round(rss_mb(), 1),
                               "nats-server": round(rss_of(server_pid), 1) if server_pid else 0.0},
                              usage)
        samples.append(sample)
        print(f"[{sample.at_s:7.1f}s] market {market}: signals {stats.seen['signals']}, commands "
              f"{stats.seen['commands']}, reports {stats.seen['reports']}, stale-quote skips "
              f"{stats.skips['stale_quote']}; RSS " + ", ".join(f"{k} {v:.0f} MB" for k, v in sample.rss_mb.items())
              + f"; JetStream holds {usage.get('jetstream memory', 0):.1f} MB in memory, "
              f"{usage.get('jetstream file', 0):.1f} MB on file, {usage.get('consumers', 0)} consumers", flush=True)
        await asyncio.sleep(every_s)


# ---------------------------------------------------------------------- the books
@dataclass
class Books:
    """What the streams hold at the end, and what it says."""
    signals: list[Any]
    records: list[Any]
    commands: list[Any]
    reports: list[Any]

    @classmethod
    async def read(cls, js: Any) -> Books:
        async def read(stream: str, subject: str, message: Any) -> list[Any]:
            return [message.FromString(m.data) async for m in decision_store.scan(js, stream, subject)]
        return cls(
            signals=await read(subjects.SIGNALS_STREAM, f"{subjects.SIGNALS_PREFIX}.*", signals_pb2.UniversalSignal),
            records=[r async for r, _ in decision_store.decisions(js, f"{subjects.DECISIONS_PREFIX}.>")],
            commands=await read(subjects.COMMANDS_STREAM, subjects.user_wildcard(subjects.Channel.COMMANDS),
                                commands_pb2.TradingCommand),
            reports=await read(subjects.EXECUTIONS_STREAM, subjects.user_wildcard(subjects.Channel.EXECUTIONS),
                               execution_pb2.ExecutionReport))

    def missing(self, users: list[str]) -> dict[str, int]:
        """What has not happened yet (or never will): all 0 once everything settled."""
        decided = {(r.signal_id, r.user_id) for r in self.records}
        stored = {c.command_id for c in self.commands}
        recorded = {c.command_id for r in self.records for c in r.commands}
        return {"decisions": sum(1 for s in self.signals for u in users if (s.signal_id, u) not in decided),
                "commands": len(recorded - stored), "reports": len(stored - {r.command_id for r in self.reports})}

    def figures(self, users: list[str]) -> dict[str, Any]:
        decided = Counter((r.signal_id, r.user_id) for r in self.records)
        recorded = {c.command_id for r in self.records for c in r.commands}
        stored = Counter(c.command_id for c in self.commands)
        # A command that reached its agent again long after it was handled is reported once more
        # as DUPLICATE (not executed): a resend the agent caught, counted apart below.
        answered = Counter(r.command_id for r in self.reports if r.status != DUPLICATE)
        per_signal_user = Counter((c.signal_id, c.user_id) for c in {c.command_id: c for c in self.commands}.values())
        executed = {r.command_id for r in self.reports if r.status in FILLED}
        duplicated = {
            "decisions_twice": sum(n - 1 for n in decided.values() if n > 1),
            "commands_stored_twice": sum(n - 1 for n in stored.values() if n > 1),
            "two_commands_for_one_signal_and_user": sum(n - 1 for n in per_signal_user.values() if n > 1),
            "reports_twice": sum(n - 1 for n in answered.values() if n > 1),
        }
        lost = {
            "signals_undecided_for_a_user": sum(1 for s in self.signals for u in users
                                                if (s.signal_id, u) not in decided),
            "recorded_commands_not_stored": len(recorded - set(stored)),
            "commands_without_a_report": len(set(stored) - set(answered)),
        }
        skips = Counter(r.skip_reason for r in self.records if r.skip_reason)
        return {
            "signals": len(self.signals), "decisions": len(self.records),
            "commands_sent": len(stored), "commands_executed": len(executed),
            "reports_by_status": dict(Counter(execution_pb2.ExecutionStatus.Name(r.status).removeprefix(
                "EXECUTION_STATUS_").lower() for r in self.reports)),
            "duplicated": duplicated, "duplicated_total": sum(duplicated.values()),
            "resends_caught_by_agents": sum(1 for r in self.reports if r.status == DUPLICATE),
            "lost": lost, "lost_total": sum(lost.values()),
            "stale_quote_skips": skips.get("stale_quote", 0),
            # A signal the workers saw only once it was too old (or expired) is a trade lost to a delay.
            "late_skips": skips.get("signal_too_old", 0) + skips.get("expired_signal", 0),
            "skips_by_reason": dict(skips.most_common()),
        }


def executed_twice(slots: dict[str, AgentSlot]) -> tuple[int, int]:
    """Commands the terminals executed, and how many of them more than once: two orders with
    one command's magic (a stop loss, take profit or stop-out deal is the broker's, not a command's)."""
    twice = executed = 0
    for slot in slots.values():
        try:
            deals = slot.terminal.history_deals_get(0, 2**31 - 1) or ()
        except Exception:  # noqa: S112 - the terminal's IPC is down: nothing to read
            continue
        orders: dict[int, set[int]] = {}
        for deal in deals:
            if deal.magic and deal.reason not in NOT_BY_A_COMMAND:
                orders.setdefault(deal.magic, set()).add(deal.order)
        twice += sum(1 for found in orders.values() if len(found) > 1)
        executed += len(orders)
    return executed, twice


# ---------------------------------------------------------------------- the run
async def soak(args: argparse.Namespace, paths: RunPaths) -> dict[str, Any]:
    stats = SoakStats(users=args.agents)
    handlers = route_logging(paths.log_file, stats)
    wall_s = args.minutes * 60 / args.speed
    options = DemoOptions(users=args.agents, duration_s=wall_s, signals_per_minute=args.signals_per_minute * args.speed)
    platform = SoakPlatform(options, paths, stats, args.speed)
    samples: list[MemorySample] = []
    started = time.monotonic()
    faults = Faults(platform, args, started)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, platform.stop.set)
    result: dict[str, Any] = {}
    try:
        async with AsyncExitStack() as stack:
            run = asyncio.create_task(platform.run(stack), name="platform")
            while stats.phase != "running" and not run.done():
                await asyncio.sleep(0.2)
            if run.done():
                run.result()  # the platform could not start: say why
            ready_s = time.monotonic() - started
            print(f"[{ready_s:7.1f}s] platform running: {args.agents} agents, {len(platform.pool.running)} "
                  f"adjustment replicas; {args.minutes:g} min of market time at {args.speed:g}x ({wall_s:.0f} s)",
                  flush=True)
            sampler = asyncio.create_task(sample_memory(platform, stats, samples, args.sample_every, started))
            injector = asyncio.create_task(faults.run(), name="faults")
            await run                           # the signal engine's duration, or Ctrl-C
            faults.stopping.set()
            await injector                      # the fault in progress ends repaired
            users = sorted(platform.slots)
            js = platform_js(platform)
            deadline = time.monotonic() + args.settle
            print(f"[{time.monotonic() - started:7.1f}s] signal engine stopped; settling (at most {args.settle:g} s)",
                  flush=True)
            while True:
                began = time.monotonic()
                books = await Books.read(js)
                missing = books.missing(users)
                print(f"[{time.monotonic() - started:7.1f}s] books read in {time.monotonic() - began:.1f} s; "
                      f"still missing: {_parts(missing) if any(missing.values()) else 'nothing'}", flush=True)
                if not any(missing.values()) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(5)
            settled_s = time.monotonic() - started
            figures = books.figures(users)
            figures["executed_by_terminals"], figures["executed_twice_by_a_terminal"] = executed_twice(platform.slots)
            figures["duplicated_total"] += figures["executed_twice_by_a_terminal"]
            await cancel_and_wait([sampler])
            result = {
                "benchmark": "soak", "command": command_line("soak.py", sys.argv[1:]),
                "machine": machine(platform.server.version if platform.server else None),
                "agents": args.agents, "market_minutes": args.minutes, "speed": args.speed,
                "wall_s": round(wall_s, 1), "startup_s": round(ready_s, 1), "settled_after_s": round(settled_s, 1),
                "adjust_replicas": len(platform.pool.running), "faults": dict(faults.log.injected),
                "fault_events": faults.log.events, **figures,
                "memory_mb": [dataclasses.asdict(s) for s in samples], "run_dir": str(paths.root),
            }
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return result


def platform_js(platform: SoakPlatform) -> Any:
    """The platform's own (service) connection: the demo view's."""
    return platform.view_nc.jetstream(timeout=10)


# ---------------------------------------------------------------------- output
def report(result: dict[str, Any]) -> str:
    lines = [
        f"soak: {result['agents']} agents, {result['market_minutes']:g} min of market time at {result['speed']:g}x "
        f"({result['wall_s']:.0f} s), {result['adjust_replicas']} adjustment replicas; started in "
        f"{result['startup_s']:.0f} s, settled {result['settled_after_s']:.0f} s after start",
        f"faults injected: {sum(result['faults'].values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result['faults'].items())) or 'none'})",
        f"signals: {result['signals']}, decisions: {result['decisions']}",
        f"commands sent: {result['commands_sent']}, executed (filled): {result['commands_executed']}, "
        f"reports: {', '.join(f'{k} {v}' for k, v in sorted(result['reports_by_status'].items()))}",
        f"duplicated: {result['duplicated_total']} ({_parts(result['duplicated'])}, executed twice by a terminal "
        f"{result['executed_twice_by_a_terminal']} of {result['executed_by_terminals']} commands the terminals hold)",
        f"resends caught by agents (reported DUPLICATE, not executed): {result['resends_caught_by_agents']}",
        f"lost: {result['lost_total']} ({_parts(result['lost'])})",
        f"stale-quote skips: {result['stale_quote_skips']}; signals decided too late to trade (signal_too_old, "
        f"expired_signal): {result['late_skips']}; skips by reason: "
        f"{', '.join(f'{k} {v}' for k, v in result['skips_by_reason'].items()) or 'none'}",
        "memory (RSS, MB) over time:",
    ]
    samples = result["memory_mb"]
    names = list(samples[0]["rss_mb"]) if samples else []
    stored = ["jetstream memory", "jetstream file", "consumers"]
    lines.append("  " + f"{'wall s':>8} {'market':>10} " + " ".join(f"{n:>28}" for n in names)
                 + " " + " ".join(f"{n:>24}" for n in stored))
    step = max(1, (len(samples) + 11) // 12)
    shown = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
    for sample in shown:
        lines.append("  " + f"{sample['at_s']:>8.0f} {sample['market']:>10} "
                     + " ".join(f"{sample['rss_mb'][n]:>28.0f}" for n in names) + " "
                     + " ".join(f"{sample['stored_mb'].get(n, float('nan')):>24.1f}" for n in stored))
    for name in names:
        values = [s["rss_mb"][name] for s in samples if s["rss_mb"][name]]
        if values:
            lines.append(f"  {name}: first {values[0]:.0f}, min {min(values):.0f}, max {max(values):.0f}, "
                         f"last {values[-1]:.0f} MB")
    lines.append(f"run folder: {result['run_dir']}")
    return "\n".join(lines)


def _parts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (TradingClients), default 1000")
    parser.add_argument("--minutes", type=float, default=30, help="market minutes to run, default 30")
    parser.add_argument("--speed", type=float, default=1.0, help="market clock speed-up over the wall clock")
    parser.add_argument("--signals-per-minute", type=float, default=6, help="signals per market minute")
    parser.add_argument("--fault-every", type=float, default=60, help="wall seconds between faults")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, of {', '.join(FAULTS)}; none: a baseline without faults")
    parser.add_argument("--nats-down", type=float, default=3, help="s the nats-server stays down")
    parser.add_argument("--agent-down", type=float, default=3, help="s a killed agent stays down")
    parser.add_argument("--ipc-down", type=float, default=5, help="s a terminal's IPC link stays down")
    parser.add_argument("--sample-every", type=float, default=15, help="wall seconds between memory samples")
    parser.add_argument("--settle", type=float, default=120, help="s to wait at the end for everything to settle")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--run-dir", type=Path, help="new or empty folder (default: a temporary one)")
    parser.add_argument("--output", default=str(OUT / "soak.json"), help="JSON results file")
    args = parser.parse_args(argv)
    unknown = set(args.faults.split(",")) - set(FAULTS) - {"", "none"}
    if unknown:
        parser.error(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    paths = RunPaths(demo_platform.run_folder(args.run_dir))
    result = asyncio.run(soak(args, paths))
    if not result:
        return 1
    print(report(result), flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")
    return 0 if result["duplicated_total"] == 0 and result["lost_total"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
