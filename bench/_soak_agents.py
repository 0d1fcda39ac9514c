"""The soak's agents in child processes (``bench/soak.py --agent-processes N``).

Each child runs its share of real :class:`Agent` s, each on a :class:`SimulatedMetaTrader5` of its
user's broker, against the platform's nats-server, with the settings the demo writes for it
(``launcher.demo.agents.agent_settings``) and the credentials files the operator issued into the
run folder (its bootstrap Secrets). The terminals quote the same prices as the platform's feed: the
:class:`ReferenceFeed` is a pure function of (seed, market time), and the market clock is rebuilt
here from the platform's (start, speed factor and its ``time.monotonic()`` origin; CLOCK_MONOTONIC
is one clock for every process of the machine).

The platform talks to a child over a pipe, one request at a time, each answered once done:

* ``("kill", uid, down_s)``: the agent stopped dead (as near a kill -9 as one process allows),
  started again on its data folder and terminal after ``down_s``;
* ``("ipc", uid, down_s)``: the terminal's IPC link failing for ``down_s``;
* ``("books", None, 0)``: what the terminals executed, per command (see ``executed_twice``), and
  this process's RSS samples so far;
* ``("stop", None, 0)``: every agent stopped cleanly; the child exits after answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import raise_nofile, rss_mb
from _heap import HeapGrowth

from mt5fleet.client.app.agent import Agent
from mt5fleet.client.app.log_context import tag_handlers
from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5
from mt5fleet.launcher.demo.agents import agent_settings
from mt5fleet.launcher.demo.services import RunPaths
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.runtime.tasks import cancel_and_wait

log = logging.getLogger("mt5fleet.soak.agents")

NOT_BY_A_COMMAND = (mt5.DEAL_REASON_SL, mt5.DEAL_REASON_TP, mt5.DEAL_REASON_SO)
FEED_SEED = 1            # launcher.demo.platform.Demo's ReferenceFeed(seed=1)


@dataclass
class AgentSlot:
    """One user's agent and the simulated terminal (its broker account) it runs against: the
    terminal outlives an agent killed and started again, as a real MT5 terminal would."""
    user: Any             # launcher.demo.agents.DemoUser
    settings: Any         # client.adapters.settings.AgentSettings
    terminal: SimulatedMetaTrader5
    agent: Agent | None = None
    restarts: int = 0


def soak_settings(user: Any, paths: RunPaths, secrets: DirectorySecretStore, servers: tuple[str, ...], seed: int,
                  intervals: dict[str, float]) -> Any:
    """The agent's settings as the demo writes them (``agent_settings``: its bootstrap Secret's
    creds, CA and key), with the soak's intervals (``prices_s``, ``heartbeat_s``, ``account_s``)."""
    settings = agent_settings(user, paths, secrets, servers, seed=seed)
    return dataclasses.replace(settings, intervals=dataclasses.replace(settings.intervals, **intervals))


def new_slot(user: Any, settings: Any, feed: ReferenceFeed, clock: AcceleratedClock, seed: int) -> AgentSlot:
    broker = BROKERS[user.preset].evolve(login=user.login, password=user.password)
    return AgentSlot(user, settings, SimulatedMetaTrader5(broker, feed, clock=clock.now, seed=seed))


async def start_slot(slot: AgentSlot, clock: AcceleratedClock) -> None:
    slot.agent = Agent(slot.settings, slot.terminal, clock=clock)
    await slot.agent.start()


async def connected(agent: Agent, timeout: float) -> bool:
    """Wait (up to ``timeout``) until the agent has its NATS connection."""
    deadline = time.monotonic() + timeout
    while agent.nc is None or not agent.nc.is_connected:
        if time.monotonic() > deadline:
            log.warning("agent %s not connected after %.0f s: starting the next ones anyway", agent.user_id, timeout)
            return False
        await asyncio.sleep(0.05)
    return True


async def kill_agent(agent: Agent) -> None:
    """As near a kill -9 as one process allows: every task cancelled where it is, the NATS
    connection closed without flushing, the outbox and ledger files closed as they are. A
    process killed keeps nothing running: the stop flag is set too, so that no loop of the
    dead agent goes on beside its successor (one did, once: a ``streams`` loop calling a shut
    MT5 thread for the rest of a soak)."""
    agent._stop.set()
    catchup = agent.catchup._task
    await cancel_and_wait([*agent._tasks, *([catchup] if catchup is not None else [])])
    if agent.nc is not None:
        with contextlib.suppress(Exception):
            await agent.nc.close()
    agent.mt5.shutdown()
    agent.outbox.close()
    agent.ledger.close()


async def stop_agent(slot: AgentSlot, timeout: float = 10) -> None:
    if slot.agent is None:
        return
    try:
        await asyncio.wait_for(slot.agent.stop(), timeout)
    except Exception as exc:  # TimeoutError included: the others must stop anyway
        log.warning("stopping agent %s: %r", slot.user.user_id, exc)


async def restart_after_kill(slot: AgentSlot, clock: AcceleratedClock, down_s: float) -> str:
    await kill_agent(slot.agent)
    await asyncio.sleep(down_s)
    slot.restarts += 1
    await start_slot(slot, clock)
    return f"agent {slot.user.user_id} killed, restarted after {down_s:g} s"


async def drop_ipc(slot: AgentSlot, down_s: float) -> str:
    slot.terminal.fail_ipc()
    await asyncio.sleep(down_s)
    slot.terminal.restore_ipc()
    return f"terminal of {slot.user.user_id}: IPC down {down_s:g} s"


def terminal_orders(slots: Any) -> tuple[int, int, list[str]]:
    """Commands the terminals executed, how many of them more than once (two orders with one
    command's magic; a stop loss, take profit or stop-out deal is the broker's, not a command's),
    and which (user, magic, orders) for the evidence."""
    twice = executed = 0
    evidence: list[str] = []
    for slot in slots:
        try:
            deals = slot.terminal.history_deals_get(0, 2**31 - 1) or ()
        except Exception:  # noqa: S112 - the terminal's IPC is down: nothing to read
            continue
        orders: dict[int, set[int]] = {}
        for deal in deals:
            if deal.magic and deal.reason not in NOT_BY_A_COMMAND:
                orders.setdefault(deal.magic, set()).add(deal.order)
        for magic, found in orders.items():
            if len(found) > 1:
                twice += 1
                evidence.append(f"{slot.user.user_id}: magic {magic} orders {sorted(found)}")
        executed += len(orders)
    return executed, twice, evidence


# ---------------------------------------------------------------------- the child process
def child_main(conn: Any, spec: dict[str, Any]) -> None:
    """Entry point of a child (spawned): its agents until the platform says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C is the platform's to handle
    # Every agent hops to its own MT5 thread twice per price interval: with hundreds of agents
    # the hops queue for the GIL, each up to the switch interval (5 ms by default).
    if spec.get("switch_interval_s"):
        sys.setswitchinterval(spec["switch_interval_s"])
    handler = logging.FileHandler(spec["log_file"])
    tag_handlers(handler)   # each line names its agent's user
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        asyncio.run(_Child(conn, spec).run())
    except Exception as exc:  # the platform says which process and why
        log.exception("agent process failed")
        with contextlib.suppress(OSError):
            conn.send({"error": repr(exc)})


class _Child:
    def __init__(self, conn: Any, spec: dict[str, Any]) -> None:
        self.conn, self.spec = conn, spec
        start, origin, factor = spec["clock"]
        self.clock = AcceleratedClock(start, factor)
        self.clock._origin = origin              # the platform's clock, to the microsecond
        self.feed = ReferenceFeed(seed=FEED_SEED)
        self.slots: dict[str, AgentSlot] = {}
        self.samples: list[tuple[float, float]] = []     # (wall s since the platform's start, RSS MB)
        self.heap: HeapGrowth | None = None

    async def run(self) -> None:
        raise_nofile()
        heap = HeapGrowth() if self.spec.get("heap_top") else None
        began = time.monotonic()
        gate = asyncio.Semaphore(self.spec.get("concurrency", 8))

        paths, secrets = RunPaths(Path(self.spec["run_root"])), DirectorySecretStore(self.spec["secrets_root"])

        async def start(index: int, user: Any) -> None:
            settings = soak_settings(user, paths, secrets, tuple(self.spec["servers"]), index + 1,
                                     self.spec["intervals"])
            slot = new_slot(user, settings, self.feed, self.clock, seed=index + 1)
            self.slots[user.user_id] = slot
            async with gate:   # one TLS handshake at a time per slot: a storm of them times out
                await start_slot(slot, self.clock)
                await connected(slot.agent, 60)

        await asyncio.gather(*(start(i, u) for i, u in self.spec["share"]))
        log.info("%d agents started in %.1f s", len(self.slots), time.monotonic() - began)
        if heap:
            heap.mark()
        self.heap = heap
        sampler = asyncio.create_task(self._sample())
        self.conn.send({"ready": len(self.slots), "start_s": round(time.monotonic() - began, 1),
                        "rss_mb": round(rss_mb(), 1)})
        loop = asyncio.get_running_loop()
        try:
            while True:
                kind, uid, down_s = await loop.run_in_executor(None, self.conn.recv)
                try:
                    answer = await self._handle(kind, uid, down_s)
                except Exception as exc:  # a fault that failed is said, the run goes on
                    log.exception("request %s %s failed", kind, uid)
                    answer = {"error": repr(exc)}
                self.conn.send(answer)
                if kind == "stop":
                    return
        finally:
            await cancel_and_wait([sampler])

    async def _handle(self, kind: str, uid: str | None, down_s: float) -> dict[str, Any]:
        if kind == "kill":
            return {"detail": await restart_after_kill(self.slots[uid], self.clock, down_s)}
        if kind == "ipc":
            return {"detail": await drop_ipc(self.slots[uid], down_s)}
        if kind == "books":
            executed, twice, evidence = terminal_orders(self.slots.values())
            grown = self.heap.top(self.spec["heap_top"]) if self.heap else []
            return {"executed": executed, "twice": twice, "evidence": evidence, "rss": list(self.samples),
                    "heap_growth": grown,
                    "restarts": sum(s.restarts for s in self.slots.values())}
        if kind == "stop":
            began = time.monotonic()
            await asyncio.gather(*(stop_agent(slot) for slot in self.slots.values()))
            return {"stopped": len(self.slots), "stop_s": round(time.monotonic() - began, 1),
                    "rss": list(self.samples)}
        raise ValueError(f"unknown request {kind!r}")

    async def _sample(self) -> None:
        origin = self.spec["started"]
        while True:
            self.samples.append((round(time.monotonic() - origin, 1), round(rss_mb(), 1)))
            await asyncio.sleep(self.spec.get("sample_every", 15))
