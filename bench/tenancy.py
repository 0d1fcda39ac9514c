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
medians are reported. Steps 1 and 2 are in ``_tenancy_issue.py``, step 3 in
``_tenancy_traffic.py``; this script runs them and prints the table.

    python bench/tenancy.py [--issue 1000 10000] [--resolver-accounts 10000] [--pushes 1000]
                            [--tenants 200] [--messages 100] [--commands 250] [--rounds 3]
                            [--output PATH.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import command_line, machine, raise_nofile
from _tenancy_issue import Issuer, Tenant, bench_issuing, bench_server, issue_tenants
from _tenancy_traffic import bench_traffic

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.proto.runtime.embedded_nats import binary_version, find_binary


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
