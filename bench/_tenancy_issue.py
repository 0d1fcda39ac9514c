"""bench/tenancy.py's issuing and server steps (steps 1 and 2): both designs' credentials
issued with the project's own code, the tenants written into a full resolver directory,
the server's start-up time and memory, first connections and ``$SYS.REQ.CLAIMS.UPDATE``
pushes. Also what step 3 shares: ``connect_user``, ``platform_jwt``, ``status_kb``.

Imported as ``_tenancy_issue`` by tenancy.py (``python bench/<x>.py`` puts the folder
first on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from _common import server_pid
from nats.aio.client import RawCredentials

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.reconcile import access_for
from mt5fleet.operator.core.tiers import DEFAULT_TIERS, Tier
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.instruments import STANDARD_SYMBOLS
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

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
