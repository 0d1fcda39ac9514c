"""The operator end to end on the real API server (kube_harness): ``mt5fleet operator`` as a
separate process on its ServiceAccount token, from a kubeconfig (outside a pod), with a real
nats-server in JWT mode; TradingClients applied and deleted with the real kubectl.

* one replica: a TradingClient reaches Ready, its bootstrap Secret is created, the worker
  pool is scaled; deleted, the finalizer removes the Secret; SIGTERM releases the Lease;
* RBAC from evidence: the server's audit log of that run against deploy/rbac: nothing
  refused, nothing granted that was not used;
* three replicas, then two: exactly one (the Lease holder) makes any request but reading
  the Lease, yet every replica serves /metrics and the probes and only the holder reports
  ``mt5fleet_operator_leader 1``; kill -9 the leader and another takes over and reconciles;
  nothing twice.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from operator_process import (
    CRDS,
    EXAMPLES,
    WORKERS,
    WRITES,
    OperatorProcess,
    get,
    holder,
    nats_for_operator,
    operator_events,
    operator_kubeconfig,
    phase,
    prepare_namespace,
    rbac_for,
    token_uid,
    until,
    what,
)

from mt5fleet.operator.adapters.appliers import CREDS_KEY, bootstrap_secret_name

# A cold cache builds the server inside the first set-up (./dev test builds it first).
pytestmark = pytest.mark.timeout(900)

@pytest.fixture(scope="module")
def cluster(kube_cluster):
    kube_cluster.kubectl("apply", "-f", str(CRDS))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd/tradingclients.mt5fleet.io", "--timeout=30s")
    return kube_cluster


# ---------------------------------------------------------------------- one replica, whole lifecycle
@dataclass(frozen=True)
class Lifecycle:
    namespace: str
    exit_code: int


@pytest.fixture(scope="module")
def lifecycle(cluster, tmp_path_factory) -> Lifecycle:
    """bob applied, Ready, deleted; the operator stopped with SIGTERM. The waits fail here;
    what they leave behind (audit log, Lease) is asserted by the tests."""
    return asyncio.run(run_lifecycle(cluster, tmp_path_factory.mktemp("e2e-one")))


async def run_lifecycle(cluster, folder: Path) -> Lifecycle:
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    prepare_namespace(cluster, namespace)
    with nats_for_operator(folder / "nats") as nats:
        operator = OperatorProcess("solo", nats, namespace, operator_kubeconfig(cluster, namespace, folder, "solo"),
                                   folder)
        try:
            cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "bob-pro.yaml"))
            await until(lambda: phase(cluster, namespace, "bob") == ("Ready", 1), "bob Ready", processes=(operator,))
            secret = get(cluster, "secret", bootstrap_secret_name("bob"), "-n", namespace)
            assert secret is not None and CREDS_KEY in secret["data"]
            assert secret["metadata"]["labels"]["mt5fleet.io/user"] == "bob"
            body = get(cluster, "tradingclient", "bob", "-n", namespace)
            assert body["metadata"]["finalizers"] == ["mt5fleet.io/finalizer"]
            ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
            assert ready["status"] == "True" and ready["observedGeneration"] == 1
            await until(lambda: (get(cluster, "deployment", WORKERS, "-n", namespace) or {})["spec"]["replicas"] == 1,
                        "the worker pool scaled to 1 for one user", processes=(operator,))

            # kubectl delete waits until the finalizer is removed, i.e. the cleanup ran.
            cluster.kubectl("delete", "-n", namespace, "tradingclient", "bob", "--timeout=60s")
            assert get(cluster, "secret", bootstrap_secret_name("bob"), "-n", namespace) is None
            assert holder(cluster, namespace).startswith("solo_")
        finally:
            exit_code = operator.stop()
    return Lifecycle(namespace=namespace, exit_code=exit_code)


async def test_the_operator_runs_from_a_kubeconfig_reconciles_and_finalizes(cluster, lifecycle):
    assert lifecycle.exit_code == 0
    assert holder(cluster, lifecycle.namespace) == ""   # released on SIGTERM: a successor need not wait
    writes = {what(e) for e in operator_events(cluster, lifecycle.namespace) if e["verb"] in WRITES}
    assert ("mt5fleet.io", "tradingclients/status", "patch") in writes  # the status came from the operator


# ---------------------------------------------------------------------- RBAC from evidence
def granted_rules(namespace: str) -> list[tuple[str | None, dict]]:
    """(namespace or None for cluster-wide, rule) of the operator's Role and ClusterRole."""
    rules = []
    for doc in rbac_for(namespace):
        if doc["kind"] in ("Role", "ClusterRole"):
            scope = doc["metadata"].get("namespace")
            rules.extend((scope, rule) for rule in doc["rules"])
    return rules


def allows(scope: str | None, rule: dict, event: dict) -> bool:
    group, resource, verb = what(event)
    ref = event.get("objectRef") or {}
    return (group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
            and (scope is None or ref.get("namespace") == scope)
            and (not rule.get("resourceNames") or ref.get("name") in rule["resourceNames"]))


def test_rbac_from_the_audit_log(cluster, lifecycle):
    events = [e for e in operator_events(cluster, lifecycle.namespace) if e.get("objectRef")]  # not discovery
    assert events, "no audit events of the operator"
    rules = granted_rules(lifecycle.namespace)
    refused = sorted({what(e) for e in events if e["responseStatus"]["code"] == 403})
    assert refused == [], f"the server refused the operator: {refused}"
    ungranted = sorted({what(e) for e in events if not any(allows(scope, rule, e) for scope, rule in rules)})
    assert ungranted == [], f"used but not granted by deploy/rbac/operator-role.yaml: {ungranted}"
    used = {what(e) for e in events}
    granted = {(group, resource, verb) for _, rule in rules for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert sorted(granted - used) == [], "granted by deploy/rbac/operator-role.yaml but never used"


# ---------------------------------------------------------------------- several replicas
async def test_of_three_replicas_one_acts_and_another_takes_over_when_it_dies(cluster, tmp_path):
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    prepare_namespace(cluster, namespace)
    with nats_for_operator(tmp_path / "nats") as nats:
        replicas = {}
        for name in ("r0", "r1", "r2"):
            kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path, name)
            process = OperatorProcess(name, nats, namespace, kubeconfig, tmp_path)
            replicas[name] = (process, token_uid(cluster, kubeconfig))
        processes = tuple(p for p, _ in replicas.values())
        try:
            cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "alice-free.yaml"))
            await until(lambda: phase(cluster, namespace, "alice") == ("Ready", 1), "alice Ready", processes=processes)
            first = holder(cluster, namespace).split("_")[0]
            assert first in replicas
            assert_only_the_leader_acted(cluster, namespace, replicas, first)
            assert_every_replica_serves_metrics_and_one_leads(replicas, first)
            secret_before = get(cluster, "secret", bootstrap_secret_name("alice"), "-n", namespace)

            # Three, then two: kill -9 the leader; one of the others takes the Lease.
            alive = dict(replicas)
            leader = first
            for _ in range(2):
                alive.pop(leader)[0].kill()
                leader = (await until(lambda: holder(cluster, namespace).split("_")[0] in alive and
                                      holder(cluster, namespace).split("_")[0],
                                      "another replica holds the Lease", processes=processes))
                assert holder(cluster, namespace).split("_")[0] == leader

            # The last one reconciles a change (tier free → pro: new credentials).
            generation = cluster.kubectl_json("patch", "tradingclient", "alice", "-n", namespace, "--type=merge",
                                              "-p", '{"spec":{"tier":"pro"}}')["metadata"]["generation"]
            await until(lambda: phase(cluster, namespace, "alice")[1] == generation, "the tier change reconciled",
                        processes=processes)
            status_writers = {e["user"]["uid"] for e in operator_events(cluster, namespace)
                              if what(e) == ("mt5fleet.io", "tradingclients/status", "patch")}
            uid_of = {name: uid for name, (_, uid) in replicas.items()}
            assert uid_of[leader] in status_writers and uid_of[first] in status_writers
            assert not any(p.process.returncode not in (None, -9) for p, _ in replicas.values())
        finally:
            for process in processes:
                if process.alive():
                    process.stop()

    events = operator_events(cluster, namespace)
    # Nothing twice: one bootstrap Secret created, never a conflict or a refusal.
    creates = [e for e in events if what(e) == ("", "secrets", "create")
               and e["objectRef"].get("name") == bootstrap_secret_name("alice")]
    assert len(creates) == 1, f"the bootstrap Secret was created {len(creates)} times"
    failed = sorted({(what(e), e["responseStatus"]["code"]) for e in events
                     if e["responseStatus"]["code"] in (403, 422) or
                     (e["responseStatus"]["code"] == 409 and what(e)[1] != "leases")})
    assert failed == []
    assert secret_before is not None


def assert_only_the_leader_acted(cluster, namespace: str, replicas: dict, leader: str) -> None:
    """The followers read the Lease and nothing else (no kopf, no watch, no write)."""
    for name, (_, uid) in replicas.items():
        requests = {what(e) for e in operator_events(cluster, namespace)
                    if e["user"].get("uid") == uid and e.get("objectRef")}
        if name == leader:
            assert ("mt5fleet.io", "tradingclients/status", "patch") in requests
        else:
            # get; create only in the race to create the Lease at the start (a 409)
            assert requests <= {("coordination.k8s.io", "leases", "get"),
                                ("coordination.k8s.io", "leases", "create")}, (name, requests)


def assert_every_replica_serves_metrics_and_one_leads(replicas: dict, leader: str) -> None:
    """Followers serve /metrics and the probes too (ready: standing by is their job); the
    leader gauge is 1 on the Lease holder only."""
    leading = {}
    for name, (process, _) in replicas.items():
        assert process.http_get("/healthz") == (200, '{"alive": true}'), name
        assert process.http_get("/readyz")[0] == 200, name
        leading[name] = process.metric("mt5fleet_operator_leader")
    assert leading == {name: 1.0 if name == leader else 0.0 for name in replicas}, leading
