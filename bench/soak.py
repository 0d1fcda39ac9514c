"""Soak (issue 12): the whole platform for a long run on an accelerated market clock, with faults
injected at random, then the books: commands sent, executed, duplicated (must be 0), lost (must
be 0), stale-quote skips, and the memory of every process over time. Not a test, not in CI.

    python bench/soak.py --agents 1000 --minutes 30 --prices-every 1.5 --adjust-replicas 2 --fault-every 60
    python bench/soak.py --agents 100 --minutes 4 --speed 2 --fault-every 15 --agent-processes 0

The platform is the demo's own (``launcher/demo``: the operator in local mode scaling the
adjustment-worker pool, the market-data, feedback, health and catch-up workers, one real agent
per user on a simulated terminal of its broker, the signal engine), in this process, with the
nats-server (JWT operator mode, TLS) as a process of its own. The agents run in
``--agent-processes`` child processes (``bench/_soak_agents.py``; 0: in this process, for small
runs), each with its share of real agents and their simulated terminals, with the settings and
credentials the operator issued, on the same market clock and reference feed. The market clock
starts on a weekday 10:00 New York and runs ``--speed`` times faster than the wall clock; the
agents' intervals (prices every ``--prices-every``, 0.5 s as in the demo; account every 5 s,
heartbeat every 2 s) are market seconds. ``--adjust-replicas`` sizes the adjustment pool (every
replica reads every user's prices, so in one process 8 replicas cost 8 times the price load).

Faults, one every ``--fault-every`` wall seconds, chosen at random (seeded) from ``--faults``:
* ``nats-restart``: the nats-server killed (SIGKILL), down for ``--nats-down`` s, restarted on
  its port and store;
* ``worker-kill``: an adjustment-worker replica stopped dead (its fan-out cancelled where it
  is, its leases not handed over, its connection closed), a new replica started in its place
  as a Deployment would;
* ``agent-kill``: an agent stopped dead (tasks cancelled, connection closed without a flush),
  a new agent started on the same data folder and terminal after ``--agent-down`` s (by the
  child process that runs it, told over a pipe);
* ``ipc-drop``: an agent's MT5 terminal connection failing (IPC error) for ``--ipc-down`` s.

At the end the signal engine stops, every fault is repaired, and once everything settled (or
``--settle`` s passed) the streams are read: every signal stored was decided once for every
user, every recorded command stored once and answered by one execution report, and no
terminal executed an order of one command twice (each child counts its terminals' orders per
command). The RSS of this process, of every agent process and of the nats-server is sampled
every ``--sample-every`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import multiprocessing
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
from _heap import HeapGrowth
from _soak_agents import (
    AgentSlot,
    child_main,
    drop_ipc,
    new_slot,
    restart_after_kill,
    soak_settings,
    start_slot,
    terminal_orders,
)

from mt5fleet.launcher.demo import platform as demo_platform
from mt5fleet.launcher.demo import services as demo_services
from mt5fleet.launcher.demo.agents import DemoUser, demo_users
from mt5fleet.launcher.demo.platform import Demo, DemoOptions, route_logging, wait_until, workers_see_everyone
from mt5fleet.launcher.demo.services import RunPaths, quietly
from mt5fleet.launcher.demo.view import DemoStats, Endpoint
from mt5fleet.operator.core.models import TradingClient
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
class MemorySample:
    at_s: float
    market: str
    rss_mb: dict[str, float]                                         # per process
    stored_mb: dict[str, float] = field(default_factory=dict)        # what JetStream holds (/jsz), consumers


@dataclass
class FaultLog:
    injected: Counter = field(default_factory=Counter)
    events: list[tuple[float, str, str]] = field(default_factory=list)   # (wall s, fault, detail)


# ---------------------------------------------------------------------- the agents
class LocalAgents:
    """The agents in the platform's own process (``--agent-processes 0``): small runs."""

    def __init__(self) -> None:
        self.slots: dict[str, AgentSlot] = {}

    @property
    def users(self) -> list[str]:
        return sorted(self.slots)

    def pids(self) -> dict[str, int]:
        return {}

    async def kill(self, uid: str, down_s: float, clock: Any) -> str:
        return await restart_after_kill(self.slots[uid], clock, down_s)

    async def ipc(self, uid: str, down_s: float) -> str:
        return await drop_ipc(self.slots[uid], down_s)

    async def books(self) -> dict[str, Any]:
        executed, twice, evidence = terminal_orders(self.slots.values())
        return {"executed": executed, "twice": twice, "evidence": evidence, "processes": {}}


@dataclass
class AgentChild:
    name: str
    process: Any
    conn: Any
    uids: list[str]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: dict[str, Any] = field(default_factory=dict)

    async def ask(self, request: tuple[str, str | None, float] | None, timeout: float) -> dict[str, Any]:
        """Send ``request`` (None: only wait for the next answer) and wait for the answer."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            if request is not None:
                self.conn.send(request)
            deadline = time.monotonic() + timeout
            while not await loop.run_in_executor(None, self.conn.poll, 0.5):
                if not self.process.is_alive():
                    raise RuntimeError(f"{self.name} (pid {self.process.pid}) died, exit code {self.process.exitcode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} (pid {self.process.pid}) did not answer in {timeout:g} s")
            answer = self.conn.recv()
        if "error" in answer:
            raise RuntimeError(f"{self.name} (pid {self.process.pid}): {answer['error']}")
        return answer


class ChildAgents:
    """The agents spread over spawned child processes (``bench/_soak_agents.py``): user ``i``
    in child ``i mod N``; faults aimed at an agent go to its child over a pipe."""

    def __init__(self) -> None:
        self.children: list[AgentChild] = []
        self.owner: dict[str, AgentChild] = {}
        self.stopped: dict[str, Any] = {}

    @property
    def users(self) -> list[str]:
        return sorted(self.owner)

    def pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self.children}

    async def start(self, shares: list[list[tuple[int, DemoUser]]], spec: dict[str, Any], logs: Path) -> None:
        context = multiprocessing.get_context("spawn")
        for p, share in enumerate(shares):
            name = f"agents-{p + 1}"
            parent, child = context.Pipe()
            process = context.Process(target=child_main, name=name, daemon=True,
                                      args=(child, {**spec, "share": share, "log_file": str(logs / f"{name}.log")}))
            process.start()
            child.close()
            agent_child = AgentChild(name, process, parent, [u.user_id for _, u in share])
            self.children.append(agent_child)
            self.owner.update({uid: agent_child for uid in agent_child.uids})
        for child, ready in zip(self.children, await asyncio.gather(*(c.ask(None, 3600) for c in self.children)),
                                strict=True):
            child.ready = ready

    async def kill(self, uid: str, down_s: float, clock: Any) -> str:
        child = self.owner[uid]
        return (await child.ask(("kill", uid, down_s), 120 + down_s))["detail"] + f" (in {child.name})"

    async def ipc(self, uid: str, down_s: float) -> str:
        child = self.owner[uid]
        return (await child.ask(("ipc", uid, down_s), 120 + down_s))["detail"] + f" (in {child.name})"

    async def books(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(c.ask(("books", None, 0), 600) for c in self.children))
        return {"executed": sum(a["executed"] for a in answers), "twice": sum(a["twice"] for a in answers),
                "evidence": [e for a in answers for e in a["evidence"]],
                "heap_growth": {c.name: a.get("heap_growth", []) for c, a in zip(self.children, answers, strict=True)},
                "processes": {c.name: {"pid": c.process.pid, "agents": len(c.uids), "start_s": c.ready.get("start_s"),
                                       "restarts": a["restarts"], "rss_own_samples": a["rss"]}
                              for c, a in zip(self.children, answers, strict=True)}}

    async def stop(self) -> None:
        """Every agent stopped cleanly by its child, then the children gone."""
        async def one(child: AgentChild) -> None:
            try:
                self.stopped[child.name] = await child.ask(("stop", None, 0), 180)
            except Exception as exc:
                log.warning("stopping %s: %r", child.name, exc)
            await asyncio.to_thread(child.process.join, 30)
            if child.process.is_alive():
                log.warning("%s did not exit: killed", child.name)
                child.process.kill()
        await asyncio.gather(*(one(c) for c in self.children))
        for name, answer in self.stopped.items():
            print(f"{name}: {answer.get('stopped', 0)} agents stopped in {answer.get('stop_s', 0):g} s", flush=True)


# ---------------------------------------------------------------------- the platform
class SoakPlatform(Demo):
    """The demo, keeping the handles faults need: the nats-server, every agent and terminal."""

    def __init__(self, options: DemoOptions, paths: RunPaths, stats: SoakStats, args: argparse.Namespace) -> None:
        super().__init__(options, paths, stats)
        self.args = args
        self.clock.factor = args.speed
        self.server: EmbeddedNats | None = None
        self.view_nc: Any = None                  # the demo's own service connection
        self.fleet: LocalAgents | ChildAgents = ChildAgents() if args.agent_processes > 0 else LocalAgents()

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

    async def _start_operator(self, stack: AsyncExitStack, service: Any) -> list[TradingClient]:
        """The demo gives the operator 30 s to provision everyone: a thousand users need longer."""
        chosen, demo_sizing = self.args.adjust_replicas, demo_services.USERS_PER_WORKER
        if chosen:  # the operator sizes the pool as ceil(users / users_per_worker)
            demo_services.USERS_PER_WORKER = max(1, -(-self.options.users // chosen))
        try:
            clients = await super()._start_operator(stack, service)
        finally:
            demo_services.USERS_PER_WORKER = demo_sizing
        await wait_until(lambda: self._provisioned(clients), "the operator to provision every user", 900)
        return clients

    @property
    def intervals(self) -> dict[str, float]:
        return {"prices_s": self.args.prices_every, "heartbeat_s": self.args.heartbeat_every,
                "account_s": self.args.account_every}

    async def _start_agents(self, stack: AsyncExitStack, clients: list[TradingClient]) -> None:
        if isinstance(self.fleet, LocalAgents):
            await super()._start_agents(stack, clients)
            return
        processes = min(self.args.agent_processes, len(clients))
        self.phase(f"starting {len(clients)} agents with simulated MT5 terminals in {processes} processes")
        self.users = await demo_users(clients, self.operator)
        shares: list[list[tuple[int, DemoUser]]] = [[] for _ in range(processes)]
        for index, user in enumerate(self.users):
            shares[index % processes].append((index, user))
        spec = {"clock": (self.clock.start, self.clock._origin, self.clock.factor), "started": self.args.started,
                "run_root": str(self.paths.root), "secrets_root": str(self.operator.secrets.root),
                "servers": list(self.servers), "intervals": self.intervals,
                "switch_interval_s": self.args.gil_switch_ms / 1000,
                "concurrency": self.args.start_concurrency, "sample_every": self.args.sample_every,
                "heap_top": self.args.heap_top}
        stack.push_async_callback(self.fleet.stop)
        await self.fleet.start(shares, spec, self.paths.root)
        self.endpoints["agents"] = []
        for child in self.fleet.children:
            print(f"[{time.monotonic() - self.args.started:7.1f}s] {child.name} (pid {child.process.pid}): "
                  f"{child.ready['ready']} agents started in {child.ready['start_s']:g} s", flush=True)
        self.phase("waiting until the adjustment workers see every agent")
        await wait_until(lambda: workers_see_everyone(self.pool, [u.user_id for u in self.users]),
                         "the workers to see every agent's quotes, specs and account", 600)

    async def _start_agent(self, stack: AsyncExitStack, index: int, user: DemoUser) -> Endpoint:
        """``agents.start_agent`` without the status page and /metrics (a thousand of each would
        be a thousand ports and servers the soak does not read), keeping the agent and terminal."""
        settings = soak_settings(user, self.paths, self.operator.secrets, self.servers, index + 1, self.intervals)
        slot = new_slot(user, settings, self.feed, self.clock, seed=index + 1)
        self.fleet.slots[user.user_id] = slot
        await start_slot(slot, self.clock)

        async def stop() -> None:
            if slot.agent is not None:
                await quietly(f"agent {user.user_id}", slot.agent.stop, 10)
        stack.push_async_callback(stop)
        return Endpoint(f"agent {user.user_id}", "")


# ---------------------------------------------------------------------- faults
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
            try:
                detail = await getattr(self, kind.replace("-", "_"))()
            except Exception as exc:  # said, and counted apart: the run goes on
                detail = f"FAILED: {exc!r}"
                log.exception("soak fault %s failed", kind)
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
        uid = self.rng.choice(self.platform.fleet.users)
        return await self.platform.fleet.kill(uid, self.args.agent_down, self.platform.clock)

    async def ipc_drop(self) -> str:
        uid = self.rng.choice(self.platform.fleet.users)
        return await self.platform.fleet.ipc(uid, self.args.ipc_down)


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
        children = platform.fleet.pids()
        rss = {"python (platform)" if children else "python (platform + agents)": round(rss_mb(), 1),
               **{name: round(rss_of(pid), 1) for name, pid in children.items()},
               "nats-server": round(rss_of(server_pid), 1) if server_pid else 0.0}
        sample = MemorySample(round(time.monotonic() - started, 1), market, rss, usage)
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


# ---------------------------------------------------------------------- the run
async def soak(args: argparse.Namespace, paths: RunPaths) -> dict[str, Any]:
    stats = SoakStats(users=args.agents)
    handlers = route_logging(paths.log_file, stats)
    wall_s = args.minutes * 60 / args.speed
    options = DemoOptions(users=args.agents, duration_s=wall_s, signals_per_minute=args.signals_per_minute * args.speed)
    started = args.started = time.monotonic()
    heap = HeapGrowth() if args.heap_top else None
    platform = SoakPlatform(options, paths, stats, args)
    samples: list[MemorySample] = []
    faults = Faults(platform, args, started)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, platform.stop.set)
    result: dict[str, Any] = {}
    try:
        async with AsyncExitStack() as stack:
            run = asyncio.create_task(platform.run(stack), name="platform")
            while stats.phase != "running" and not run.done() and not platform.stop.is_set():
                await asyncio.sleep(0.2)
            if run.done():
                run.result()  # the platform could not start: say why
            ready_s = time.monotonic() - started
            print(f"[{ready_s:7.1f}s] platform running: {args.agents} agents, {len(platform.pool.running)} "
                  f"adjustment replicas; {args.minutes:g} min of market time at {args.speed:g}x ({wall_s:.0f} s)",
                  flush=True)
            if heap:
                heap.mark()
            sampler = asyncio.create_task(sample_memory(platform, stats, samples, args.sample_every, started))
            injector = asyncio.create_task(faults.run(), name="faults")
            await run                           # the signal engine's duration, or Ctrl-C
            faults.stopping.set()
            await injector                      # the fault in progress ends repaired
            engine_stopped_s = time.monotonic() - started
            heap_growth = {"python (platform)": heap.top(args.heap_top)} if heap else {}
            users = platform.fleet.users
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
            terminals = await platform.fleet.books()
            figures["executed_by_terminals"], figures["executed_twice_by_a_terminal"] = (terminals["executed"],
                                                                                          terminals["twice"])
            figures["executed_twice_evidence"] = terminals["evidence"][:50]
            figures["duplicated_total"] += figures["executed_twice_by_a_terminal"]
            await cancel_and_wait([sampler])
            result = {
                "benchmark": "soak", "command": command_line("soak.py", sys.argv[1:]),
                "machine": machine(platform.server.version if platform.server else None),
                "agents": args.agents, "agent_processes": args.agent_processes, "market_minutes": args.minutes,
                "speed": args.speed,
                "agent_intervals_s": {"prices": args.prices_every, "heartbeat": args.heartbeat_every,
                                      "account": args.account_every},
                "wall_s": round(wall_s, 1), "startup_s": round(ready_s, 1), "settled_after_s": round(settled_s, 1),
                "adjust_replicas": len(platform.pool.running), "faults": dict(faults.log.injected),
                "fault_events": faults.log.events, **figures,
                "memory_mb": [dataclasses.asdict(s) for s in samples],
                "engine_stopped_s": round(engine_stopped_s, 1),
                # while the platform runs: reading the books at the end holds them in this process
                "memory_summary_mb": memory_summary([s for s in samples if s.at_s <= engine_stopped_s + 1]),
                "agent_processes_detail": terminals["processes"],
                "heap_growth": {**heap_growth, **terminals["heap_growth"]},
                "run_dir": str(paths.root),
            }
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return result


def platform_js(platform: SoakPlatform) -> Any:
    """The platform's own (service) connection: the demo view's."""
    return platform.view_nc.jetstream(timeout=10)


def _slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares growth of (wall s, MB) points, in MB per wall minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return round(60 * sum((x - mx) * (y - my) for x, y in points) / var, 2) if var else None


def memory_summary(samples: list[MemorySample]) -> dict[str, dict[str, Any]]:
    """Per process: first, min, max and last RSS, and its growth (MB per wall minute) over the whole
    run and over its second half (what is left once caches and streams have filled up)."""
    summary = {}
    for name in (samples[0].rss_mb if samples else {}):
        points = [(s.at_s, s.rss_mb[name]) for s in samples if s.rss_mb.get(name)]
        if not points:
            continue
        values = [v for _, v in points]
        summary[name] = {"first": values[0], "min": min(values), "max": max(values), "last": values[-1],
                         "growth_mb_per_min": _slope_per_min(points),
                         "growth_mb_per_min_second_half": _slope_per_min(points[len(points) // 2:])}
    return summary


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
    for name, m in result.get("memory_summary_mb", {}).items():
        lines.append(f"  {name}: first {m['first']:.0f}, min {m['min']:.0f}, max {m['max']:.0f}, "
                     f"last {m['last']:.0f} MB;"
                     f" growth {m['growth_mb_per_min']} MB/min over the run, "
                     f"{m['growth_mb_per_min_second_half']} MB/min over its second half")
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
    parser.add_argument("--agent-processes", type=int, default=3,
                        help="child processes the agents are spread over; 0: in the platform's process, default 3")
    parser.add_argument("--start-concurrency", type=int, default=8,
                        help="agents a child process starts (and connects) at once, default 8")
    parser.add_argument("--gil-switch-ms", type=float, default=1.0,
                        help="sys.setswitchinterval of the agent processes, ms (Python's default: 5)")
    parser.add_argument("--adjust-replicas", type=int, default=0,
                        help="adjustment replicas the operator sizes the pool to (through its users per replica); "
                             "0: the demo's sizing (2 users per replica, at most one per partition: 8)")
    parser.add_argument("--prices-every", type=float, default=0.5,
                        help="market s between an agent's price batches (and account checks), default 0.5 as the demo")
    parser.add_argument("--heartbeat-every", type=float, default=2, help="market s between heartbeats, default 2")
    parser.add_argument("--account-every", type=float, default=5,
                        help="market s between account updates when nothing changed, default 5")
    parser.add_argument("--sample-every", type=float, default=15, help="wall seconds between memory samples")
    parser.add_argument("--settle", type=float, default=120, help="s to wait at the end for everything to settle")
    parser.add_argument("--heap-top", type=int, default=0,
                        help="diagnostic: count live objects by type once the platform runs and at the end, and "
                             "report the N types that grew most, in every Python process")
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
