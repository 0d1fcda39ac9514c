"""Tenant accounts (SPEC §7, issue 10): what one NATS account per tenant costs, each figure
beside the shared-account design (every user in the app account) measured in the same run.

1. Issuing N tenants (``--issue 1000 10000``). Tenant design, per tenant: an account key and
   its signing key, the account claims from ``operator.core.tenancy.tenant_account`` (one
   activation token per import, each signed by the platform account), the account JWT
   signed by the operator signing key, and the agent's user JWT (its grants inside its own
   account from ``reconcile.access_for``, no limits of its own, signed by the tenant's
   signing key). Shared design: the user JWT from ``AccountAuthority.issue_user`` in the app
   account (the same grants, the tier's limits). Tiers in turn free, pro, enterprise, each
   with as many ``md.`` symbols as the tier can select (6, 20, 30).
2. nats-server (JWT operator mode, full resolver) started with ``--resolver-accounts``
   tenant account JWTs written into its resolver directory beforehand (``<key>.jwt``, as the
   full resolver stores them; not pushed) vs the same server with only the system and
   platform accounts: time from launch to ``/healthz`` 200 and the server's VmRSS. On the
   big server: the first connection of a tenant user (its account is loaded then) vs a
   shared-account user, and ``--pushes`` new tenant account JWTs pushed through
   ``$SYS.REQ.CLAIMS.UPDATE`` (``push_account_jwt``, as the operator pushes: update, then a
   lookup to confirm) vs as many pushes of the shared design's app account (no exports),
   one revocation more each (what a change costs in the shared design).
3. Traffic through imports, on a fresh server with ``--tenants`` K tenant accounts (pushed)
   and K shared-account users, all connected. Price ingest: every user publishes
   ``--messages`` ClientPriceStream batches (3 quotes) into TC_PRICES as JetStream publishes
   (``Nats-Msg-Id``, ack to its own inbox, ``--window`` unacked per connection): through the
   tenant's service import vs directly in the shared account; stored messages/s (the
   stream's sequence advance) and the server's CPU per message. Command delivery: the
   platform publishes ``--commands`` TradingCommands per user to ``tc.<uid>.commands``:
   received through each tenant's stream import vs plain subscriptions in the shared
   account; msgs/s until the last is received, server CPU per message.

All clients live in this one process, so on 2 cores the Python clients bound the rates;
the server's CPU per message is the cost of the import itself. Rounds alternate the order;
medians are reported.

    python bench/tenancy.py [--issue 1000 10000] [--resolver-accounts 10000] [--pushes 1000]
                            [--tenants 200] [--messages 100] [--commands 250] [--rounds 3]
                            [--output PATH.json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from _common import command_line, machine, price_batch, process_cpu_s, raise_nofile, server_pid
from nats.aio.client import RawCredentials

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.reconcile import access_for
from mt5fleet.operator.core.tiers import DEFAULT_TIERS, Tier
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.instruments import STANDARD_SYMBOLS
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, binary_version, find_binary
from mt5fleet.proto.v1 import commands_pb2

TIER_CYCLE = ("free", "pro", "enterprise")
SYMBOLS = tuple(sorted(STANDARD_SYMBOLS))
STARTUP_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------- issuing
def tier_of(index: int) -> Tier:
    return DEFAULT_TIERS[TIER_CYCLE[index % len(TIER_CYCLE)]]


def md_symbols(tier: Tier) -> tuple[str, ...]:
    """As many ``md.`` symbols as the tier can select: trading + correlation + monitoring
    (every standard symbol where the tier is unlimited)."""
    if not tier.max_trading_pairs or not tier.max_monitoring_pairs:
        return SYMBOLS
    return SYMBOLS[:tier.max_trading_pairs + tier.max_correlation_pairs + tier.max_monitoring_pairs]


@dataclass
class Tenant:
    uid: str
    account: str
    account_jwt: str = field(repr=False)
    user: na.IssuedUser = field(repr=False)
    imports: int = 0


class Issuer:
    """Both designs' issuing, as the operator would do it with the project's own code."""

    def __init__(self, chain: na.TrustChain) -> None:
        self.chain = chain
        self.platform = tenancy.Platform(chain.app_account.public_key, chain.app_signing)
        self.shared = chain.authority()

    def tenant(self, uid: str, tier: Tier) -> Tenant:
        issued_at = na.now_s()
        key, signing = nj.NKey.create(nj.KeyKind.ACCOUNT), nj.NKey.create(nj.KeyKind.ACCOUNT)
        symbols = md_symbols(tier)
        claims = tenancy.tenant_account(uid, symbols, tenancy.TenantLimits.of_tier(tier), tenant=key.public_key,
                                        platform=self.platform, issued_at=issued_at,
                                        signing_keys=(signing.public_key,))
        account_jwt = nj.encode_account(claims, self.chain.operator_signing, issued_at=issued_at)
        access = access_for(uid, symbols, tier)
        authority = na.AccountAuthority(claims, account_signer=signing, operator_signer=self.chain.operator_signing,
                                        clock=lambda: issued_at)
        # As the operator issues a tenant's user: its grants inside its own account, no limits
        # of its own (the account carries the tier's).
        permissions = getattr(access, "tenant_permissions", access.permissions)
        user = authority.issue_user(uid, permissions, nj.NatsLimits())
        return Tenant(uid, key.public_key, account_jwt, user, len(claims.imports))

    def shared_user(self, uid: str, tier: Tier) -> na.IssuedUser:
        access = access_for(uid, md_symbols(tier), tier)
        return self.shared.issue_user(uid, access.permissions, access.limits)


def issue_tenants(issuer: Issuer, count: int, prefix: str = "t") -> tuple[list[Tenant], float]:
    started = time.perf_counter()
    tenants = [issuer.tenant(f"{prefix}{i:05d}", tier_of(i)) for i in range(count)]
    return tenants, time.perf_counter() - started


def issue_shared(issuer: Issuer, count: int, prefix: str = "s") -> tuple[list[na.IssuedUser], float]:
    started = time.perf_counter()
    users = [issuer.shared_user(f"{prefix}{i:05d}", tier_of(i)) for i in range(count)]
    return users, time.perf_counter() - started


def bench_issuing(issuer: Issuer, counts: Sequence[int], rounds: int) -> tuple[list[dict[str, Any]], dict[int, list]]:
    """Tenants/s and users/s per N; N above 2,000 is issued once per design (it takes a while)."""
    rows, kept = [], {}
    for count in counts:
        times: dict[str, list[float]] = {"tenant": [], "shared": []}
        last: list[Tenant] = []
        for r in range(rounds if count <= 2000 else 1):
            for design in (("tenant", "shared") if r % 2 == 0 else ("shared", "tenant")):
                if design == "tenant":
                    last, seconds = issue_tenants(issuer, count)
                else:
                    _, seconds = issue_shared(issuer, count)
                times[design].append(seconds)
                print(f"  issue {count}: {design} {seconds:.2f} s ({count / seconds:,.0f}/s)", flush=True)
        tenant_s, shared_s = statistics.median(times["tenant"]), statistics.median(times["shared"])
        shared_user_jwt = issuer.shared_user("s00000", tier_of(0)).jwt
        rows.append({
            "count": count, "rounds": len(times["tenant"]),
            "tenant_s": round(tenant_s, 3), "tenants_per_s": round(count / tenant_s),
            "shared_s": round(shared_s, 3), "shared_users_per_s": round(count / shared_s),
            "ratio_tenant_to_shared": round(shared_s / tenant_s, 4),
            "tenant_ms_each": round(tenant_s / count * 1e3, 3), "shared_ms_each": round(shared_s / count * 1e3, 3),
            "signatures_per_tenant_mean": round(statistics.mean(t.imports + 2 for t in last), 1),
            "imports_by_tier": {TIER_CYCLE[i]: last[i].imports for i in range(3)},
            "tenant_account_jwt_bytes_mean": round(statistics.mean(len(t.account_jwt) for t in last)),
            "tenant_account_jwt_bytes_by_tier": {TIER_CYCLE[i]: len(last[i].account_jwt) for i in range(3)},
            "tenant_user_jwt_bytes_mean": round(statistics.mean(len(t.user.jwt) for t in last)),
            "shared_user_jwt_bytes": len(shared_user_jwt),
            "tenant_times_s": [round(x, 3) for x in times["tenant"]],
            "shared_times_s": [round(x, 3) for x in times["shared"]],
        })
        kept[count] = last
    return rows, kept


# ---------------------------------------------------------------------- the server
def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def timed_start(chain: na.TrustChain, resolver_dir: Path, settle_s: float) -> tuple[EmbeddedNats, dict[str, Any]]:
    """Launch to /healthz 200 (EmbeddedNats polls it every 50 ms), then VmRSS."""
    server = EmbeddedNats(server_name="mt5fleet-bench-tenancy", operator=chain.server_mode(resolver_dir),
                          startup_timeout_s=STARTUP_TIMEOUT_S)
    started = time.perf_counter()
    server.start()
    ready = time.perf_counter() - started
    pid = server_pid(server)
    rss_ready = status_kb(pid, "VmRSS")
    time.sleep(settle_s)
    return server, {"start_s": round(ready, 3), "rss_ready_mb": round(rss_ready / 1024, 1),
                    "rss_settled_mb": round(status_kb(pid, "VmRSS") / 1024, 1),
                    "hwm_mb": round(status_kb(pid, "VmHWM") / 1024, 1)}


def platform_jwt(chain: na.TrustChain) -> str:
    """The platform account with the fleet's exports, newer than the server's preload."""
    issued_at = nj.decode_account(chain.app_account_jwt).issued_at + 1
    return nj.encode_account(tenancy.platform_account(chain.app_account_claims), chain.operator_signing,
                             issued_at=issued_at)


def write_resolver(directory: Path, chain: na.TrustChain, tenants: Sequence[Tenant]) -> int:
    """The full resolver's own layout: one ``<account public key>.jwt`` per account; the
    platform account (with its exports) too, so tenants' imports resolve."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{chain.app_account.public_key}.jwt").write_text(platform_jwt(chain))
    total = 0
    for tenant in tenants:
        (directory / f"{tenant.account}.jwt").write_text(tenant.account_jwt)
        total += len(tenant.account_jwt)
    return total


async def connect_user(url: str, user: na.IssuedUser, **options: Any) -> Any:
    return await nats.connect(url, user_credentials=RawCredentials(user.creds_text), name=f"agent-{user.name}",
                              inbox_prefix=subjects.inbox_prefix(user.name), allow_reconnect=False,
                              max_reconnect_attempts=0, connect_timeout=30, **options)


async def first_connections(url: str, users: Sequence[na.IssuedUser]) -> list[float]:
    """Connect-and-flush times, one user after another (a tenant's account is loaded on its
    user's first connection)."""
    times = []
    for user in users:
        started = time.perf_counter()
        nc = await connect_user(url, user)
        await nc.flush()
        times.append(time.perf_counter() - started)
        await nc.close()
    return times


async def push_rates(server: EmbeddedNats, chain: na.TrustChain, tenants: Sequence[Tenant],
                     shared: na.AccountAuthority, blocks: int = 1) -> dict[str, Any]:
    """``push_account_jwt`` of each new tenant account vs as many pushes of the shared app
    account with one more revocation each (the shared design's account: no exports, so
    pushed last, after the tenants that import from the platform)."""
    system = await connect_user(server.url, chain.system_user)
    elapsed = {"tenant": 0.0, "shared": 0.0}
    trusted = chain.trusted_signers
    size = max(1, len(tenants) // blocks)
    shared_bytes = 0
    try:
        for block in range(0, len(tenants), size):
            chunk = tenants[block:block + size]
            started = time.perf_counter()
            for tenant in chunk:
                await na.push_account_jwt(system, tenant.account_jwt, trusted_signers=trusted)
            elapsed["tenant"] += time.perf_counter() - started
            started = time.perf_counter()
            for _ in chunk:
                shared.revoke(nj.NKey.create(nj.KeyKind.USER).public_key)
                token = shared.account_jwt()
                await na.push_account_jwt(system, token, trusted_signers=trusted)
                shared_bytes = len(token)
            elapsed["shared"] += time.perf_counter() - started
    finally:
        await system.close()
    count = len(tenants)
    return {"pushes": count, "tenant_s": round(elapsed["tenant"], 3),
            "tenant_per_s": round(count / elapsed["tenant"]),
            "tenant_ms_each": round(elapsed["tenant"] / count * 1e3, 2),
            "shared_s": round(elapsed["shared"], 3), "shared_per_s": round(count / elapsed["shared"]),
            "shared_ms_each": round(elapsed["shared"] / count * 1e3, 2),
            "shared_account_jwt_bytes_at_end": shared_bytes,
            "ratio_tenant_to_shared": round(elapsed["shared"] / elapsed["tenant"], 3)}


def shared_authority(chain: na.TrustChain) -> na.AccountAuthority:
    """The shared design's app account: every user in it, no exports, revocations grow."""
    return na.AccountAuthority(dataclasses.replace(chain.app_account_claims, exports=()),
                               account_signer=chain.app_signing, operator_signer=chain.operator_signing,
                               last_issued_at=nj.decode_account(chain.app_account_jwt).issued_at + 1)


async def bench_server(issuer: Issuer, resident: Sequence[Tenant], pushed: Sequence[Tenant], rounds: int,
                       settle_s: float, first: int) -> dict[str, Any]:
    chain = issuer.chain
    with tempfile.TemporaryDirectory(prefix="mt5fleet-bench-tenancy-") as folder:
        full = Path(folder) / "full"
        written = write_resolver(full, chain, resident)
        print(f"  resolver dir: {len(resident):,} tenant account JWTs, {written / 2**20:.0f} MiB", flush=True)
        samples: dict[str, list[dict[str, Any]]] = {"platform_only": [], "tenants": []}
        extras: dict[str, Any] = {}
        for r in range(rounds):
            order = ("platform_only", "tenants") if r % 2 == 0 else ("tenants", "platform_only")
            for variant in order:
                directory = full if variant == "tenants" else Path(folder) / f"platform-{r}"
                if variant == "platform_only":
                    write_resolver(directory, chain, ())
                server, row = timed_start(chain, directory, settle_s)
                try:
                    samples[variant].append(row)
                    print(f"  start {variant}: {row['start_s']:.2f} s, VmRSS {row['rss_ready_mb']} MB "
                          f"({row['rss_settled_mb']} MB after {settle_s:g} s)", flush=True)
                    if variant == "tenants" and r == rounds - 1:
                        extras = await big_server_extras(server, issuer, resident, pushed, first)
                finally:
                    server.close()
    out: dict[str, Any] = {"resident_tenant_accounts": len(resident), "resolver_dir_mib": round(written / 2**20),
                           "preload": "full resolver directory populated before start (<key>.jwt files), not pushed"}
    for variant, rows in samples.items():
        out[variant] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        out[variant]["start_s_all"] = [row["start_s"] for row in rows]
    out["start_ratio"] = round(out["tenants"]["start_s"] / out["platform_only"]["start_s"], 2)
    out["rss_ratio"] = round(out["tenants"]["rss_settled_mb"] / out["platform_only"]["rss_settled_mb"], 2)
    return {**out, **extras}


async def big_server_extras(server: EmbeddedNats, issuer: Issuer, resident: Sequence[Tenant],
                            pushed: Sequence[Tenant], first: int) -> dict[str, Any]:
    chain = issuer.chain
    pid = server_pid(server)
    system = await connect_user(server.url, chain.system_user)
    try:  # the resolver serves what was written
        step = max(1, len(resident) // 5)
        served = [await na.fetch_account_jwt(system, t.account) == t.account_jwt for t in resident[::step]]
    finally:
        await system.close()
    if not all(served):
        raise RuntimeError("the server does not serve the tenant account JWTs written to its resolver")
    spread = max(1, len(resident) // max(first, 1))
    tenant_connect = await first_connections(server.url, [t.user for t in resident[::spread][:first]])
    shared_connect = await first_connections(server.url, [issuer.shared_user(f"c{i:05d}", tier_of(i))
                                                          for i in range(first)])
    print(f"  first connection: tenant {statistics.median(tenant_connect) * 1e3:.1f} ms, "
          f"shared {statistics.median(shared_connect) * 1e3:.1f} ms (median of {first})", flush=True)
    rss_before = status_kb(pid, "VmRSS")
    pushes = await push_rates(server, chain, pushed, shared_authority(chain))
    print(f"  push {pushes['pushes']}: tenant accounts {pushes['tenant_s']:.2f} s "
          f"({pushes['tenant_ms_each']} ms each), shared account {pushes['shared_s']:.2f} s "
          f"({pushes['shared_ms_each']} ms each)", flush=True)
    return {"lookups_checked": len(served),
            "first_connect_tenant_ms_median": round(statistics.median(tenant_connect) * 1e3, 2),
            "first_connect_shared_ms_median": round(statistics.median(shared_connect) * 1e3, 2),
            "first_connect_samples": first,
            "claims_update": {**pushes, "rss_before_mb": round(rss_before / 1024, 1),
                              "rss_after_mb": round(status_kb(pid, "VmRSS") / 1024, 1)}}


# ---------------------------------------------------------------------- traffic through imports
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


# ---------------------------------------------------------------------- report
def table(results: dict[str, Any]) -> str:
    lines = [f"{'what':58} {'tenant accounts':>20} {'shared account':>18} {'ratio':>7}"]

    def row(what: str, tenant: str, shared: str, ratio: float | None) -> None:
        lines.append(f"{what:58} {tenant:>20} {shared:>18} {'' if ratio is None else f'{ratio:.3g}':>7}")

    for issued in results.get("issuing", []):
        row(f"issue {issued['count']:,} (tenant account+tokens+user | user)", f"{issued['tenants_per_s']:,}/s",
            f"{issued['shared_users_per_s']:,}/s", issued["ratio_tenant_to_shared"])
        row("  per tenant / per user", f"{issued['tenant_ms_each']} ms", f"{issued['shared_ms_each']} ms", None)
        sizes = "/".join(f"{size / 1000:.0f}" for size in issued["tenant_account_jwt_bytes_by_tier"].values())
        imports = "/".join(str(n) for n in issued["imports_by_tier"].values())
        row(f"  imports (activation tokens) per tenant: {imports}", "", "", None)
        row("  account JWT kB (mean; free/pro/enterprise)", f"{issued['tenant_account_jwt_bytes_mean'] / 1000:.1f}"
            f" ({sizes})", f"user JWT {issued['shared_user_jwt_bytes'] / 1000:.1f}", None)
    server = results.get("server")
    if server:
        n = server["resident_tenant_accounts"]
        row(f"server start to healthz, {n:,} tenants in resolver | none", f"{server['tenants']['start_s']:.2f} s",
            f"{server['platform_only']['start_s']:.2f} s", server["start_ratio"])
        row("  server VmRSS at ready", f"{server['tenants']['rss_ready_mb']} MB",
            f"{server['platform_only']['rss_ready_mb']} MB", None)
        row("  server VmRSS settled", f"{server['tenants']['rss_settled_mb']} MB",
            f"{server['platform_only']['rss_settled_mb']} MB", server["rss_ratio"])
        if "first_connect_tenant_ms_median" in server:
            row("  first connection of a user (median)", f"{server['first_connect_tenant_ms_median']} ms",
                f"{server['first_connect_shared_ms_median']} ms", None)
            push = server["claims_update"]
            row(f"  push {push['pushes']:,} (new tenant account | shared + revocation)",
                f"{push['tenant_s']:.2f} s", f"{push['shared_s']:.2f} s", push["ratio_tenant_to_shared"])
            row("  per push", f"{push['tenant_ms_each']} ms", f"{push['shared_ms_each']} ms", None)
    traffic = results.get("traffic")
    if traffic:
        k = traffic["users_per_design"]
        for name, label, key in (("prices", f"price ingest, {k} users (import | direct), stored", "stored_per_s"),
                                 ("commands", f"command delivery, {k} users (import | plain sub)", "per_s")):
            part = traffic[name]
            row(label, f"{part['tenant'][key]:,}/s", f"{part['shared'][key]:,}/s", part["ratio_tenant_to_shared"])
            row("  server CPU per message", f"{part['tenant']['server_cpu_us_per_message']} µs",
                f"{part['shared']['server_cpu_us_per_message']} µs", None)
        row(f"connect {k} users", f"{traffic['connect_s']['tenant']} s", f"{traffic['connect_s']['shared']} s", None)
        rss = traffic["server_rss"]
        row(f"  server VmRSS added by {k} connected users",
            f"{rss['after_tenants_mb'] - rss['before_connections_mb']:.1f} MB",
            f"{rss['after_shared_mb'] - rss['after_tenants_mb']:.1f} MB", None)
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    started = time.perf_counter()
    chain = na.create_trust_chain()
    issuer = Issuer(chain)
    results: dict[str, Any] = {"command": command_line("tenancy.py", sys.argv[1:])}
    print("1. issuing", flush=True)
    issuing, kept = bench_issuing(issuer, sorted(set(args.issue)), args.rounds)
    results["issuing"] = issuing
    if args.resolver_accounts:
        print("2. nats-server with tenant accounts in its resolver", flush=True)
        resident = _reuse_or_issue(kept, args.resolver_accounts, issuer, "t")
        pushed = issue_tenants(issuer, args.pushes, prefix="p")[0] if args.pushes else []
        results["server"] = await bench_server(issuer, resident, pushed, args.rounds, args.settle, args.first)
    if args.tenants:
        print("3. traffic through imports", flush=True)
        results["traffic"] = await bench_traffic(issuer, args.tenants, args.messages, args.commands, args.window,
                                                 args.rounds, args.settle)
    results["machine"] = machine(binary_version(find_binary()))
    results["run_s"] = round(time.perf_counter() - started, 1)
    print()
    print(table(results))
    print(f"\nrun time {results['run_s']} s")
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")


def _reuse_or_issue(kept: dict[int, list[Tenant]], count: int, issuer: Issuer, prefix: str) -> list[Tenant]:
    """The tenants issued in step 1 when there are enough, else fresh ones."""
    largest = max(kept.values(), key=len, default=[])
    return largest[:count] if len(largest) >= count else issue_tenants(issuer, count, prefix=prefix)[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issue", type=int, nargs="+", default=[1_000, 10_000], help="tenant counts to issue")
    parser.add_argument("--resolver-accounts", type=int, default=10_000,
                        help="tenant accounts in the resolver at start (0: skip step 2)")
    parser.add_argument("--pushes", type=int, default=1_000, help="accounts pushed through CLAIMS.UPDATE")
    parser.add_argument("--first", type=int, default=20, help="first connections timed per design")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after ready before VmRSS is read again")
    parser.add_argument("--tenants", type=int, default=200, help="connected users per design (0: skip step 3)")
    parser.add_argument("--messages", type=int, default=100, help="price batches per user per round")
    parser.add_argument("--commands", type=int, default=250, help="commands per user per round")
    parser.add_argument("--window", type=int, default=8, help="unacked price publishes per connection")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (after one warm-up in step 3)")
    parser.add_argument("--output", help="also write the results to this JSON file")
    asyncio.run(main(parser.parse_args()))
