"""Operator benchmark: local mode reconciling 1,000 TradingClients against an embedded
nats-server in JWT mode (the operator's real set-up: an account per tenant pushed to the
server, a user JWT inside it), next to a raw nats-py baseline measured in the same run:

* first pass: TradingClients reconciled per second, each one a config entry in
  ``tc-config``, a tenant account signed and pushed, a signed user JWT and a bootstrap
  Secret (private files);
* resync at rest: the forced pass that repairs drift, with nothing to repair;
* tier change: 100 users move tier (new config, the tenant's account re-signed and pushed);
* baseline: raw ``kv.put`` of the same ClientConfig payloads, one after another as the
  operator writes them.

The first pass is then run again on a fresh server under cProfile; the top functions say
where the time goes.

    python bench/operator.py [--users 1000] [--changed 100] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.aio.client import RawCredentials

from mt5fleet.operator.adapters.nats_accounts import create_trust_chain
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.local import LocalOperator
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
OUT = ROOT / "docs" / "benchmarks" / "operator.json"
# A tier change per example tier: free users upgrade, pro users go enterprise, enterprise downgrades.
TIER_CHANGE = {"free": "pro", "pro": "enterprise", "enterprise": "pro"}


# ---------------------------------------------------------------------- the users
def templates() -> list[dict[str, Any]]:
    """The example TradingClients (free, pro, pro over the limit, enterprise): their brokers,
    symbols and risk settings are what the generated users get, in turn."""
    docs = [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if doc.get("kind") == "TradingClient"]


def user_files(folder: Path, users: int) -> list[Path]:
    """One file per user: its TradingClient and the Secret holding its MT5 password."""
    bases = templates()
    files = []
    for i in range(users):
        base = bases[i % len(bases)]
        name = f"user-{i:05d}"
        spec = {**base["spec"], "userId": name,
                "account": {"login": 10_000_000 + i, "passwordSecretRef": {"name": f"mt5-{name}", "key": "password"}}}
        client = {**base, "metadata": {"name": name}, "spec": spec}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"mt5-{name}"}, "type": "Opaque",
                  "stringData": {"password": f"pw-{i}"}}
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all([client, secret], sort_keys=False))
        files.append(path)
    return files


def change_tier(path: Path) -> None:
    client, secret = yaml.safe_load_all(path.read_text())
    client["spec"]["tier"] = TIER_CHANGE[client["spec"]["tier"]]
    path.write_text(yaml.safe_dump_all([client, secret], sort_keys=False))


# ---------------------------------------------------------------------- the platform
@dataclass
class Platform:
    server: EmbeddedNats
    service: Any                      # the operator's service user (full access in the app account)
    local: LocalOperator
    running: runtime.Running


@asynccontextmanager
async def platform_over(folder: Path, work: Path) -> AsyncIterator[Platform]:
    """A JWT-mode nats-server with the fleet's layout and a local operator over ``folder``."""
    chain = create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-bench-operator", store_dir=work / "store",
                      operator=chain.server_mode()) as server:
        service = await nats.connect(server.url, user_credentials=RawCredentials(chain.service_user.creds_text))
        await bootstrap.bootstrap(service.jetstream(), subjects.build_layout())
        secrets = DirectorySecretStore(work / "secrets")
        running = await runtime.start(runtime.embedded_options(chain, server.url, work), secrets)
        try:
            yield Platform(server, service, LocalOperator(folder, running.reconciler, secrets), running)
        finally:
            await running.close()
            await service.close()


async def timed_scan(local: LocalOperator, *, force: bool = False) -> tuple[int, float]:
    started = time.perf_counter()
    done = await local.scan(force=force)
    return done, time.perf_counter() - started


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds else 0.0


# ---------------------------------------------------------------------- the measurements
async def operator_passes(work: Path, users: int, changed: int) -> dict[str, Any]:
    folder = work / "clients"
    folder.mkdir()
    files = user_files(folder, users)
    async with platform_over(folder, work) as platform:
        done, first = await timed_scan(platform.local)
        assert done == users, f"first pass reconciled {done} of {users}"
        phases = {tracked.status.phase for tracked in platform.local.tracked.values()}
        resynced, resync = await timed_scan(platform.local, force=True)
        for path in files[:changed]:
            change_tier(path)
        moved, tier_change = await timed_scan(platform.local)
        assert moved == changed, f"tier change reconciled {moved} of {changed}"
        baseline = await baseline_puts(platform.service, users)
        version = ".".join(map(str, platform.server.version))
    return {
        "nats_server": version, "phases": sorted(phases),
        "first_pass": {"users": users, "seconds": round(first, 3), "per_s": rate(users, first)},
        "resync_at_rest": {"users": resynced, "seconds": round(resync, 3), "per_s": rate(resynced, resync)},
        "tier_change": {"users": changed, "seconds": round(tier_change, 3), "per_s": rate(changed, tier_change)},
        "baseline_kv_put": baseline,
    }


async def baseline_puts(service: Any, users: int) -> dict[str, Any]:
    """The same ClientConfig payloads the operator wrote, put one after another into a
    bucket laid out like tc-config: the floor under the operator's per-user write."""
    js = service.jetstream()
    config = await js.key_value(subjects.CONFIG_BUCKET)
    payloads = [(key, (await config.get(key)).value) for key in sorted(await config.keys())][:users]
    spec = subjects.build_layout().bucket(subjects.CONFIG_BUCKET).evolve(bucket="bench-baseline")
    await bootstrap.ensure_bucket(js, spec)
    kv = await js.key_value(spec.bucket)
    started = time.perf_counter()
    for key, payload in payloads:
        await kv.put(key, payload)
    seconds = time.perf_counter() - started
    return {"puts": len(payloads), "seconds": round(seconds, 3), "per_s": rate(len(payloads), seconds),
            "payload_bytes_mean": round(sum(len(p) for _, p in payloads) / len(payloads))}


async def profiled_first_pass(work: Path, users: int, top: int) -> dict[str, Any]:
    folder = work / "clients"
    folder.mkdir()
    user_files(folder, users)
    async with platform_over(folder, work) as platform:
        profile = cProfile.Profile()
        profile.enable()
        await platform.local.scan()
        profile.disable()
    stats = pstats.Stats(profile)
    return {"by_area": by_area(stats), "by_own_time": top_functions(stats, "tottime", top),
            "by_cumulative_time": top_functions(stats, "cumtime", top)}


# Where a function's own time goes, by what it is (first match wins).
AREAS = (
    ("YAML (PyYAML)", ("yaml/", "_yaml")),
    ("files (open, mkdir, rename, stat, read, write)", ("posix.", "io.open", "_io.", "pathlib", "os.py")),
    ("waiting on the server (epoll)", ("select.epoll",)),
    ("NATS client and sockets", ("nats/", "_socket", "asyncio/selector_events", "asyncio/streams")),
    ("JWT signing, NKeys, AES-GCM sealing", ("nkeys", "nacl", "_sodium", "cryptography", "operator/core/nats_jwt",
                                            "binascii", "base64", "hashlib", "_sha", "proto/runtime/sealing")),
    ("protobuf", ("google/protobuf",)),
    ("spec checking (jsonschema, cel-python) and status (models, typing)",
     ("operator/core/models", "operator/core/admission", "jsonschema/", "referencing/", "celpy/", "lark/",
      "re2", "typing.py", "builtins.compile", "builtins.eval", "dataclasses")),
    ("event loop", ("asyncio/",)),
)


OTHER = "other Python (the operator's own steps, builtins)"


def by_area(stats: pstats.Stats) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (path, _, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{path}:{name}"
        area = next((label for label, marks in AREAS if any(mark in where for mark in marks)), OTHER)
        totals[area] = totals.get(area, 0.0) + own
    return {area: round(seconds, 2) for area, seconds in sorted(totals.items(), key=lambda item: -item[1])}


def top_functions(stats: pstats.Stats, key: str, top: int) -> list[dict[str, Any]]:
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{short(path)}:{line}({name})", "calls": calls, "own_s": round(own, 3),
                     "cumulative_s": round(cumulative, 3)})
    order = "own_s" if key == "tottime" else "cumulative_s"
    return sorted(rows, key=lambda row: row[order], reverse=True)[:top]


def short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# ---------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo")
    ram_kb = next((int(line.split()[1]) for line in meminfo.read_text().splitlines()
                   if line.startswith("MemTotal")), 0) if meminfo.exists() else 0
    return {"cores": os.cpu_count(), "ram_gib": round(ram_kb / 2**20, 1), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def summary(results: dict[str, Any]) -> str:
    base = results["baseline_kv_put"]["per_s"]
    lines = [f"median of {results['runs']} run(s); rates min..max in brackets"]
    lines += [f"{name:16} {results[name]['users']:>6} users {results[name]['seconds']:>8.3f} s "
              f"{results[name]['per_s']:>9.1f}/s [{results[name]['per_s_min']}..{results[name]['per_s_max']}]"
              f"   x{results[name]['per_s'] / base:.3f} of the baseline"
              for name in ("first_pass", "resync_at_rest", "tier_change")]
    lines.append(f"{'baseline kv.put':16} {results['baseline_kv_put']['puts']:>6} puts  "
                 f"{results['baseline_kv_put']['seconds']:>8.3f} s {base:>9.1f}/s "
                 f"[{results['baseline_kv_put']['per_s_min']}..{results['baseline_kv_put']['per_s_max']}]")
    out = io.StringIO()
    out.write("\nfirst pass under cProfile, own time by area (s):\n")
    for area, seconds in results["profile"]["by_area"].items():
        out.write(f"  {seconds:>7.2f}  {area}\n")
    for section in ("by_own_time", "by_cumulative_time"):
        out.write(f"\nfirst pass under cProfile, {section.replace('_', ' ')}:\n")
        for row in results["profile"][section]:
            out.write(f"  {row['own_s']:>7.3f} own {row['cumulative_s']:>7.3f} cum {row['calls']:>8} "
                      f"{row['function']}\n")
    return "\n".join(lines) + out.getvalue()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (the machine is shared: one run is noise), with
    the spread of the rates."""
    merged: dict[str, Any] = {"runs": len(runs), "phases": runs[0]["phases"]}
    for name in ("first_pass", "resync_at_rest", "tier_change", "baseline_kv_put"):
        rates = sorted(run[name]["per_s"] for run in runs)
        middle = sorted(runs, key=lambda run: run[name]["per_s"])[len(runs) // 2][name]
        merged[name] = {**middle, "per_s_min": rates[0], "per_s_max": rates[-1]}
    return merged


async def main(users: int, changed: int, repeat: int, write: bool, top: int) -> None:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="mt5fleet-bench-operator-") as folder:
            runs.append(await operator_passes(Path(folder), users, changed))
    with tempfile.TemporaryDirectory(prefix="mt5fleet-bench-operator-") as folder:
        profile = await profiled_first_pass(Path(folder), users, top)
    results = {"machine": {**machine(), "nats_server": runs[0]["nats_server"]}, **median_of(runs),
               "profile": profile}
    print(summary(results))
    if write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--changed", type=int, default=100, help="users whose tier changes")
    parser.add_argument("--repeat", type=int, default=3, help="runs; each figure is their median")
    parser.add_argument("--top", type=int, default=15, help="functions listed from the profile")
    parser.add_argument("--no-write", dest="write", action="store_false", help=f"do not write {OUT.name}")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.users, arguments.changed, arguments.repeat, arguments.write, arguments.top))
