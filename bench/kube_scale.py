"""Operator scale on the real Kubernetes API server (issue 13): N TradingClients (default
1,000) with their MT5-password Secrets applied through the suite's real API server
(tests/kube_harness.py: etcd + the apiextensions server with built-in kinds) and reconciled by
``mt5fleet operator`` as a separate process on its ServiceAccount token, against a nats-server
in JWT mode. Measured:

* time from the apply to every TradingClient Ready (and the apply itself);
* API requests at rest: the operator's requests in the audit log over ``--rest`` seconds after
  all are Ready, by verb and resource, per second and per reconcile (the resync timer's
  reconciles in the same window, from the operator's own counter);
* the operator process's memory (RSS) at rest;
* in the same run, the local mode (``bench/operator.py``'s first pass over the same users,
  files instead of the API server) as the baseline.

    python bench/kube_scale.py [--users 1000] [--rest 90]

The API server is the suite's: built (or reused) in ~/.cache/mt5fleet/kube by tests/kube_build.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from _common import OUT, machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the suite's API server harness

from kube_harness import running_cluster  # noqa: E402
from operator_process import (  # noqa: E402
    ACCOUNT,
    CRDS,
    OperatorProcess,
    nats_for_operator,
    operator_kubeconfig,
    prepare_namespace,
)


def _load(name: str, path: Path) -> Any:
    """bench/operator.py by its path: ``import operator`` is the standard library's."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_bench_operator = _load("bench_operator", Path(__file__).with_name("operator.py"))  # the local-mode figures
READY_TIMEOUT_S = 1800.0
POLL_S = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def manifests(folder: Path, users: int) -> Path:
    """One multi-document file: every user's TradingClient and password Secret, the same
    users ``bench/operator.py`` generates for the local mode."""
    documents = []
    for path in _bench_operator.user_files(folder, users):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    # Secrets first: a TradingClient reconciled before its password Secret exists would be Invalid.
    documents.sort(key=lambda doc: doc["kind"] != "Secret")
    bundle = folder / "all.yaml"
    bundle.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return bundle


SETTLED = ("Ready", "Degraded", "Invalid")  # reconciled: a quarter of the users are over their tier (Degraded)


def phases(cluster: Any, namespace: str) -> Counter:
    """Phases of the TradingClients whose current generation has been reconciled; the rest
    count as "Pending"."""
    listed = json.loads(cluster.kubectl("get", "tradingclients", "-n", namespace, "-o", "json", timeout=120).stdout)

    def phase(item: dict) -> str:
        status = item.get("status") or {}
        current = status.get("observedGeneration") == item["metadata"].get("generation")
        return status.get("phase", "Pending") if current else "Pending"
    return Counter(phase(item) for item in listed["items"])


def not_ready_reasons(cluster: Any, namespace: str) -> dict[str, int]:
    """Why the TradingClients that are not Ready are not (their Ready condition's message)."""
    listed = json.loads(cluster.kubectl("get", "tradingclients", "-n", namespace, "-o", "json", timeout=120).stdout)
    reasons: Counter = Counter()
    for item in listed["items"]:
        conditions = {c["type"]: c for c in (item.get("status") or {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        if ready.get("status") != "True":
            reasons[f"{ready.get('reason', '?')}: {ready.get('message', '')[:120]}"] += 1
    return dict(reasons.most_common())


def requests_of(cluster: Any, user: str, since: float, until: float) -> list[dict]:
    """The operator's audit events whose request was received in [since, until) (unix s)."""
    def received(event: dict) -> float:
        stamp = event.get("requestReceivedTimestamp", "")
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0
    return [e for e in cluster.audit_events(user=user) if since <= received(e) < until]


def metric_sum(process: Any, name: str) -> float:
    """The sum of every sample of ``name`` on the process's /metrics (all label values)."""
    answer = process.http_get("/metrics")
    if answer is None or answer[0] != 200:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in answer[1].splitlines()
               if line.startswith((f"{name} ", f"{name}{{")))


def by_kind(events: list[dict]) -> dict[str, int]:
    counts = Counter(f"{e['verb']} {(e.get('objectRef') or {}).get('resource', '?')}" for e in events)
    return dict(counts.most_common())


async def kube_run(users: int, rest_s: float, work: Path) -> dict[str, Any]:
    with running_cluster(work / "kube") as cluster:
        cluster.kubectl("apply", "-f", str(CRDS))
        cluster.kubectl("wait", "--for=condition=Established", "crd/tradingclients.mt5fleet.io", "--timeout=60s")
        namespace = f"scale-{uuid.uuid4().hex[:6]}"
        prepare_namespace(cluster, namespace)
        (work / "users").mkdir()
        bundle = manifests(work / "users", users)
        with nats_for_operator(work / "nats") as nats:
            operator = OperatorProcess("scale", nats, namespace, operator_kubeconfig(cluster, namespace, work, "scale"),
                                       work)
            try:
                started = time.time()
                cluster.kubectl("apply", "-n", namespace, "-f", str(bundle), timeout=1800)
                applied_s = time.time() - started
                ready, seen = await until_ready(cluster, namespace, users, operator)
                ready_s = time.time() - started
                rest_from = time.time()
                reconciles_before = metric_sum(operator, "mt5fleet_operator_reconciles_total")
                await asyncio.sleep(rest_s)
                rest_until = time.time()
                reconciles = metric_sum(operator, "mt5fleet_operator_reconciles_total") - reconciles_before
                memory = rss_mb(operator.process.pid)
                reasons = not_ready_reasons(cluster, namespace)
                user = f"system:serviceaccount:{namespace}:{ACCOUNT}"
                at_rest = requests_of(cluster, user, rest_from, rest_until)
                # The leader election's own requests (renewals) do not grow with the users.
                reconciling = [e for e in at_rest if (e.get("objectRef") or {}).get("resource") != "leases"]
                all_requests = requests_of(cluster, user, started, rest_until)
            finally:
                operator.stop(timeout=60)
    return {
        "users": users, "apply_s": round(applied_s, 1), "all_ready_s": round(ready_s, 1) if ready else None,
        "phases": dict(seen), "not_ready": reasons, "ready_per_s": round(users / ready_s, 1) if ready else None,
        "requests_until_ready": len(all_requests) - len(at_rest),
        "rest": {"seconds": round(rest_until - rest_from, 1), "requests": len(at_rest),
                 "per_s": round(len(at_rest) / (rest_until - rest_from), 2), "reconciles": reconciles,
                 "lease_requests": len(at_rest) - len(reconciling),
                 "per_reconcile": round(len(reconciling) / reconciles, 3) if reconciles else None,
                 "by_kind": by_kind(at_rest)},
        "operator_rss_mb": memory,
    }


async def until_ready(cluster: Any, namespace: str, users: int, operator: Any) -> tuple[bool, Counter]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: Counter = Counter()
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(phases, cluster, namespace)
        print(f"  {dict(seen)}", flush=True)
        if sum(seen.get(p, 0) for p in SETTLED) >= users or not operator.alive():
            return operator.alive(), seen
        await asyncio.sleep(POLL_S)
    return False, seen


async def local_run(users: int, work: Path) -> dict[str, Any]:
    folder = work / "clients"
    folder.mkdir()
    _bench_operator.user_files(folder, users)
    async with _bench_operator.platform_over(folder, work) as platform:
        done, first = await _bench_operator.timed_scan(platform.local)
        seen = Counter(tracked.status.phase for tracked in platform.local.tracked.values())
    return {"users": done, "all_reconciled_s": round(first, 1), "per_s": round(done / first, 1), "phases": dict(seen)}


def summary(result: dict[str, Any]) -> str:
    kube, local = result["kube"], result["local"]
    rest = kube["rest"]
    lines = [
        f"{kube['users']} TradingClients through the real API server: applied in {kube['apply_s']} s, "
        f"all reconciled {kube['all_ready_s']} s after the apply began ({kube['ready_per_s']}/s); "
        f"phases {kube['phases']}",
        f"  not Ready, why: {kube['not_ready']}",
        f"  operator requests until Ready: {kube['requests_until_ready']}",
        f"  at rest over {rest['seconds']} s: {rest['requests']} requests ({rest['per_s']}/s), "
        f"{rest['reconciles']:.0f} resync reconciles, {rest['per_reconcile']} requests per reconcile "
        f"(besides {rest['lease_requests']} Lease requests of the leader election, renewed every second here)",
        f"  by kind: {rest['by_kind']}",
        f"  operator RSS at rest: {kube['operator_rss_mb']} MB",
        f"local mode, same users: all reconciled in {local['all_reconciled_s']} s ({local['per_s']}/s); "
        f"phases {local['phases']}",
    ]
    if kube["all_ready_s"] and local["all_reconciled_s"]:
        lines.append(f"ratio API server / local: {kube['all_ready_s'] / local['all_reconciled_s']:.1f}x the time")
    return "\n".join(lines)


async def main(users: int, rest_s: float, write: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="mt5fleet-kube-scale-") as tmp:
        work = Path(tmp)
        (work / "local").mkdir()
        local = await local_run(users, work / "local")
        print(f"local mode: {local}", flush=True)
        (work / "kube").mkdir()
        kube = await kube_run(users, rest_s, work / "kube")
    result = {"machine": machine(), "kube": kube, "local": local,
              "command": f"python bench/kube_scale.py --users {users} --rest {rest_s:g}"}
    print(summary(result))
    if write:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "kube_scale.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rest", type=float, default=90.0, help="seconds at rest in which requests are counted")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks/kube_scale.json")
    options = parser.parse_args()
    asyncio.run(main(options.users, options.rest, not options.no_write))
