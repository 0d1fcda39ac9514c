"""bench/tenancy.py's traffic step (step 3): K tenant accounts and K shared-account users
connected to one server; price ingest through the tenants' service imports vs directly,
command delivery through their stream imports vs plain subscriptions.

Imported as ``_tenancy_traffic`` by tenancy.py.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from _common import price_batch, process_cpu_s, server_pid
from _tenancy_issue import (
    STARTUP_TIMEOUT_S,
    Issuer,
    connect_user,
    issue_shared,
    issue_tenants,
    platform_jwt,
    status_kb,
)

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.v1 import commands_pb2


@dataclass
class Tally:
    expected: int = 0
    count: int = 0
    errors: int = 0
    last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self, expected: int) -> None:
        self.expected, self.count, self.errors, self.last = expected, 0, 0, 0.0
        self.done.clear()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.last = time.perf_counter()
            self.done.set()


class Agent:
    """One user's connection: JetStream price publishes with acks to its own inbox, and a
    plain subscription on its own commands."""

    def __init__(self, uid: str, index: int, nc: Any, acks: Tally, commands: Tally) -> None:
        self.uid, self.nc, self.acks, self.commands = uid, nc, acks, commands
        self.prices = subjects.user_subject(uid, subjects.Channel.PRICES)
        self.command_subject = subjects.user_subject(uid, subjects.Channel.COMMANDS)
        self.reply = f"{subjects.inbox_prefix(uid)}.ack"
        self.payload = price_batch(index, uid, 1, 1_795_014_000_000).SerializeToString()
        self.sent = self.acked = 0
        self.progress = asyncio.Event()

    async def subscribe(self) -> None:
        await self.nc.subscribe(self.reply, cb=self.on_ack)
        await self.nc.subscribe(self.command_subject, cb=self.on_command)
        await self.nc.flush()

    async def on_ack(self, msg: Any) -> None:
        self.acked += 1
        if (msg.headers and msg.headers.get("Status")) or b'"error"' in msg.data:
            self.acks.errors += 1
        self.acks.hit()
        self.progress.set()

    async def on_command(self, msg: Any) -> None:
        self.commands.hit()

    async def stream(self, count: int, window: int, tag: str) -> None:
        self.sent = self.acked = 0
        for i in range(count):
            while self.sent - self.acked >= window:
                self.progress.clear()
                await self.progress.wait()
            await self.nc.publish(self.prices, self.payload, reply=self.reply,
                                  headers={"Nats-Msg-Id": f"{self.uid}:{tag}:{i}"})
            self.sent += 1
        await self.nc.flush()


async def connect_agents(url: str, users: Sequence[na.IssuedUser], acks: Tally,
                         commands: Tally) -> tuple[list[Agent], float]:
    slots = asyncio.Semaphore(50)

    async def one(index: int, user: na.IssuedUser) -> Agent:
        async with slots:
            agent = Agent(user.name, index, await connect_user(url, user, ping_interval=20), acks, commands)
            await agent.subscribe()
            return agent

    started = time.perf_counter()
    agents = list(await asyncio.gather(*(one(i, u) for i, u in enumerate(users))))
    return agents, time.perf_counter() - started


async def last_seq(js: Any) -> int:
    return (await js.stream_info(subjects.PRICES_STREAM)).state.last_seq


async def ingest(agents: Sequence[Agent], tally: Tally, js: Any, pid: int, count: int, window: int,
                 tag: str) -> dict[str, Any]:
    tally.reset(len(agents) * count)
    before = await last_seq(js)
    cpu = process_cpu_s(pid)
    started = time.perf_counter()
    await asyncio.gather(*(agent.stream(count, window, tag) for agent in agents))
    await asyncio.wait_for(tally.done.wait(), 120)
    elapsed = tally.last - started
    cpu = process_cpu_s(pid) - cpu
    stored = await last_seq(js) - before
    return {"messages": tally.expected, "acked": tally.count, "errors": tally.errors, "stored": stored,
            "seconds": round(elapsed, 3), "stored_per_s": round(stored / elapsed),
            "server_cpu_us_per_message": round(cpu / tally.expected * 1e6, 1)}


def command_payload(uid: str, i: int) -> bytes:
    return commands_pb2.TradingCommand(
        command_id=f"{uid}-c{i}", user_id=uid, symbol="EURUSD", order_type=commands_pb2.BUY, lot_size=0.1,
        entry_price=1.10002, stop_loss=1.09502, take_profit=1.11002, confidence_score=0.8,
        expires_at=1_795_014_600_000, created_at=1_795_014_000_000, signal_id=f"sig-{i}",
        reason="bench").SerializeToString()


async def deliver(service: Any, agents: Sequence[Agent], tally: Tally, pid: int,
                  payloads: dict[str, list[bytes]]) -> dict[str, Any]:
    per_agent = len(next(iter(payloads.values())))
    tally.reset(len(agents) * per_agent)
    cpu = process_cpu_s(pid)
    started = time.perf_counter()
    for k in range(per_agent):
        for agent in agents:
            await service.publish(agent.command_subject, payloads[agent.uid][k])
    await service.flush()
    await asyncio.wait_for(tally.done.wait(), 120)
    elapsed = tally.last - started
    cpu = process_cpu_s(pid) - cpu
    return {"messages": tally.expected, "received": tally.count, "seconds": round(elapsed, 3),
            "per_s": round(tally.count / elapsed), "server_cpu_us_per_message": round(cpu / tally.expected * 1e6, 1)}


def median_row(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return sorted(rows, key=lambda row: row[key])[(len(rows) - 1) // 2]


async def bench_traffic(issuer: Issuer, count: int, messages: int, per_user_commands: int, window: int,
                        rounds: int, settle_s: float) -> dict[str, Any]:
    chain = issuer.chain
    tenants, _ = issue_tenants(issuer, count, prefix="t")
    shared_users, _ = issue_shared(issuer, count, prefix="s")
    with EmbeddedNats(server_name="mt5fleet-bench-tenancy", operator=chain.server_mode(),
                      startup_timeout_s=STARTUP_TIMEOUT_S) as server:
        pid = server_pid(server)
        system = await connect_user(server.url, chain.system_user)
        service = await connect_user(server.url, chain.service_user)
        await na.push_account_jwt(system, platform_jwt(chain), trusted_signers=chain.trusted_signers)
        await bootstrap.bootstrap(service.jetstream(timeout=10), subjects.build_layout())
        for tenant in tenants:
            await na.push_account_jwt(system, tenant.account_jwt, trusted_signers=chain.trusted_signers)
        await system.close()
        js = service.jetstream(timeout=10)
        tallies = {design: (Tally(), Tally()) for design in ("tenant", "shared")}
        await asyncio.sleep(settle_s)
        rss = {"before_connections_mb": round(status_kb(pid, "VmRSS") / 1024, 1)}
        tenant_agents, tenant_connect_s = await connect_agents(server.url, [t.user for t in tenants],
                                                               *tallies["tenant"])
        await asyncio.sleep(settle_s)
        rss["after_tenants_mb"] = round(status_kb(pid, "VmRSS") / 1024, 1)
        shared_agents, shared_connect_s = await connect_agents(server.url, shared_users, *tallies["shared"])
        await asyncio.sleep(settle_s)
        rss["after_shared_mb"] = round(status_kb(pid, "VmRSS") / 1024, 1)
        print(f"  {count} tenants connected in {tenant_connect_s:.2f} s, {count} shared users in "
              f"{shared_connect_s:.2f} s; server VmRSS {rss}", flush=True)
        agents = {"tenant": tenant_agents, "shared": shared_agents}
        prices: dict[str, list] = {"tenant": [], "shared": []}
        commands: dict[str, list] = {"tenant": [], "shared": []}
        payloads = {a.uid: [command_payload(a.uid, i) for i in range(per_user_commands)]
                    for group in agents.values() for a in group}
        try:
            for r in range(-1, rounds):
                order = ("tenant", "shared") if r % 2 == 0 else ("shared", "tenant")
                for design in order:
                    row = await ingest(agents[design], tallies[design][0], js, pid, messages, window,
                                       tag=f"{design}{r}")
                    if r >= 0:
                        prices[design].append(row)
                    print(f"  round {r if r >= 0 else 'warm-up'} prices {design}: {row['stored']}/{row['messages']} "
                          f"stored in {row['seconds']:.2f} s = {row['stored_per_s']:,}/s, server "
                          f"{row['server_cpu_us_per_message']} µs/msg, errors {row['errors']}", flush=True)
                for design in order:
                    row = await deliver(service, agents[design], tallies[design][1], pid,
                                        {a.uid: payloads[a.uid] for a in agents[design]})
                    if r >= 0:
                        commands[design].append(row)
                    print(f"  round {r if r >= 0 else 'warm-up'} commands {design}: {row['received']}/"
                          f"{row['messages']} in {row['seconds']:.2f} s = {row['per_s']:,}/s, server "
                          f"{row['server_cpu_us_per_message']} µs/msg", flush=True)
            rss["end_mb"] = round(status_kb(pid, "VmRSS") / 1024, 1)
        finally:
            await asyncio.gather(*(a.nc.close() for group in agents.values() for a in group),
                                 return_exceptions=True)
            await service.close()
    out: dict[str, Any] = {"users_per_design": count, "price_batches_per_user": messages,
                           "commands_per_user": per_user_commands, "window": window,
                           "rounds": rounds, "connect_s": {"tenant": round(tenant_connect_s, 2),
                                                           "shared": round(shared_connect_s, 2)},
                           "server_rss": rss}
    for name, rows, key in (("prices", prices, "stored_per_s"), ("commands", commands, "per_s")):
        result = {design: {**median_row(rows[design], key),
                           "server_cpu_us_per_message": statistics.median(
                               row["server_cpu_us_per_message"] for row in rows[design]),
                           "rounds_per_s": [row[key] for row in rows[design]]} for design in rows}
        result["ratio_tenant_to_shared"] = round(result["tenant"][key] / result["shared"][key], 3)
        result["server_cpu_us_extra_per_message"] = round(result["tenant"]["server_cpu_us_per_message"]
                                                          - result["shared"]["server_cpu_us_per_message"], 1)
        out[name] = result
    return out
