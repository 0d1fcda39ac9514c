"""The real Kubernetes API server of the test suite (kube_harness), driven by the real
kubectl: the project's CRD and examples, the built-in kinds the operator uses (Secrets,
Deployments and their scale subresource, Leases) and those the chart installs
(PodDisruptionBudgets, NetworkPolicies), watches, conflicts, RBAC for
ServiceAccount tokens and the audit log."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "deploy" / "helm" / "mt5fleet" / "crds"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

# A cold cache builds the server inside the first test's set-up (./dev test builds it
# before pytest starts, so this only matters for a bare pytest run on a new machine).
pytestmark = pytest.mark.timeout(900)


def tradingclient(name: str, **spec_changes) -> dict:
    spec = {"userId": name, "tier": "free",
            "broker": {"name": "Exness", "server": "Exness-MT5Trial", "accountType": "demo"},
            "account": {"login": 81234567, "passwordSecretRef": {"name": f"mt5-{name}", "key": "password"}},
            "symbols": {"trading": ["EURUSD"]}}
    for path, value in spec_changes.items():
        *parents, leaf = path.split("__")
        target = spec
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return {"apiVersion": "mt5fleet.io/v1alpha1", "kind": "TradingClient", "metadata": {"name": name}, "spec": spec}


# ---------------------------------------------------------------------- the CRD and examples

def test_the_crd_becomes_established_and_is_discoverable(crd):
    conditions = crd.kubectl_json("get", "crd", "tradingclients.mt5fleet.io")["status"]["conditions"]
    assert {c["type"]: c["status"] for c in conditions}["Established"] == "True"
    # Both discovery forms: kubectl reads the aggregated one, kopf and the Python client the plain list.
    assert "tradingclients" in crd.kubectl("api-resources", "--api-group=mt5fleet.io", "-o", "name").stdout
    groups = json.loads(crd.kubectl("get", "--raw", "/apis").stdout)["groups"]
    assert "mt5fleet.io" in {group["name"] for group in groups}


def test_kubectl_explain_reads_the_crd_schema(crd):
    explained = crd.kubectl("explain", "tradingclients.spec").stdout
    assert re.search(r"KIND:\s+TradingClient", explained), explained
    for field in ("userId", "tier", "broker", "account", "risk"):
        assert field in explained
    assert "maxRiskPerTrade" in crd.kubectl("explain", "tradingclients.spec.risk").stdout


def test_the_examples_apply_and_show_in_the_printer_columns(crd, namespace):
    args = [arg for path in EXAMPLES for arg in ("-f", str(path))]
    crd.kubectl("apply", "-n", namespace, *args)
    table = crd.kubectl("get", "tradingclients", "-n", namespace).stdout
    assert table.split("\n")[0].split()[:3] == ["NAME", "USER", "TIER"]
    names = {line.split()[0] for line in table.strip().split("\n")[1:]}
    assert names == {"alice", "bob", "carol", "dave"}
    secret = crd.kubectl_json("get", "secret", "mt5-alice", "-n", namespace)
    assert base64.b64decode(secret["data"]["password"]) and "stringData" not in secret


@pytest.mark.parametrize(("change", "field"), [
    ({"userId": "Alice_1"}, "spec.userId"),
    ({"risk__maxRiskPerTrade": 500}, "spec.risk.maxRiskPerTrade"),
    ({"risk__maxOpenPositions": "many"}, "spec.risk.maxOpenPositions"),
    ({"broker": None}, "spec.broker"),
], ids=["pattern", "maximum", "type", "required"])
def test_a_malformed_tradingclient_is_refused_naming_the_field(crd, namespace, change, field):
    result = crd.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(tradingclient("erin", **change)),
                         check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr and field in result.stderr, result.stderr


def test_an_object_in_a_missing_namespace_is_refused(crd):
    result = crd.kubectl("apply", "-n", "no-such-namespace", "-f", "-", input=json.dumps(tradingclient("erin")),
                         check=False)
    assert result.returncode != 0 and 'namespaces "no-such-namespace" not found' in result.stderr


# ---------------------------------------------------------------------- built-in kinds

def test_a_secret_is_created_updated_and_watched(kube_cluster, namespace):
    k = kube_cluster
    k.kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=password=one")
    first = k.kubectl_json("get", "secret", "creds", "-n", namespace)
    assert first["type"] == "Opaque" and base64.b64decode(first["data"]["password"]) == b"one"
    with k.watch("secret", "creds", "-n", namespace) as watch:
        watch.next_event(lambda e: e.type == "ADDED")
        patch = json.dumps({"stringData": {"password": "two"}})
        k.kubectl("patch", "secret", "creds", "-n", namespace, "--type=merge", "-p", patch)
        modified = watch.next_event(lambda e: e.type == "MODIFIED")
    second = k.kubectl_json("get", "secret", "creds", "-n", namespace)
    assert base64.b64decode(second["data"]["password"]) == b"two"
    assert modified.resource_version == second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    # kubectl create secret checks keys itself: a manifest reaches the server's check.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"a/b": "eA=="}}
    bad = k.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(secret), check=False)
    assert bad.returncode != 0 and "data[a/b]" in bad.stderr, bad.stderr


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "adjust"},
    "spec": {"selector": {"matchLabels": {"app": "adjust"}},
             "template": {"metadata": {"labels": {"app": "adjust"}},
                          "spec": {"containers": [{"name": "worker", "image": "mt5fleet:1.0"}]}}},
}


def test_a_deployment_is_defaulted_and_scaled_through_its_scale_subresource(kube_cluster, namespace):
    k = kube_cluster
    k.kubectl("apply", "--server-side", "--field-manager=chart", "-n", namespace, "-f", "-",
              input=json.dumps(DEPLOYMENT))
    created = k.kubectl_json("get", "deployment", "adjust", "-n", namespace)
    assert created["spec"]["replicas"] == 1 and created["metadata"]["generation"] == 1
    assert created["spec"]["strategy"]["type"] == "RollingUpdate"
    assert created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"

    with k.watch("deployment", "adjust", "-n", namespace) as watch:
        watch.next_event(lambda e: e.type == "ADDED")
        k.kubectl("patch", "deployment", "adjust", "-n", namespace, "--subresource=scale", "--type=merge",
                  "-p", '{"spec":{"replicas":3}}')
        watch.next_event(lambda e: e.type == "MODIFIED")
    scale = k.kubectl_json("get", "deployment", "adjust", "-n", namespace, "--subresource=scale")
    assert scale["apiVersion"] == "autoscaling/v1" and scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=adjust"
    scaled = k.kubectl_json("get", "deployment", "adjust", "-n", namespace)
    assert scaled["spec"]["replicas"] == 3 and scaled["metadata"]["generation"] == 2

    # The status is written through /status only; the main resource keeps it.
    k.kubectl("patch", "deployment", "adjust", "-n", namespace, "--subresource=status", "--type=merge",
              "-p", '{"status":{"replicas":3,"readyReplicas":3}}')
    k.kubectl("patch", "deployment", "adjust", "-n", namespace, "--type=merge", "-p", '{"status":{"replicas":0}}')
    assert k.kubectl_json("get", "deployment", "adjust", "-n", namespace)["status"]["readyReplicas"] == 3


def test_an_invalid_deployment_is_refused_naming_the_field(kube_cluster, namespace):
    bad = json.loads(json.dumps(DEPLOYMENT))
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    result = kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0 and "spec.template.metadata.labels" in result.stderr


def test_a_lease_is_created_renewed_watched_and_a_stale_write_conflicts(kube_cluster, namespace):
    k = kube_cluster
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "mt5fleet-operator", "namespace": namespace},
             "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}}
    k.kubectl("create", "-f", "-", input=json.dumps(lease))
    stored = k.kubectl_json("get", "lease", "mt5fleet-operator", "-n", namespace)
    with k.watch("lease", "mt5fleet-operator", "-n", namespace) as watch:
        watch.next_event(lambda e: e.type == "ADDED")
        renewed = {**stored, "spec": {**stored["spec"], "holderIdentity": "replica-b"}}
        k.kubectl("replace", "-f", "-", input=json.dumps(renewed))
        watch.next_event(lambda e: e.type == "MODIFIED")
    stale = {**stored, "spec": {**stored["spec"], "holderIdentity": "replica-c"}}
    conflict = k.kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
    assert conflict.returncode != 0 and "Conflict" in conflict.stderr
    holder = k.kubectl_json("get", "lease", "mt5fleet-operator", "-n", namespace)["spec"]["holderIdentity"]
    assert holder == "replica-b"


PDB = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "adjust"},
       "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "adjust"}}}}


def test_a_pod_disruption_budget_is_stored_with_a_status_endpoint_and_checked(kube_cluster, namespace):
    k = kube_cluster
    k.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(PDB))
    stored = k.kubectl_json("get", "pdb", "adjust", "-n", namespace)  # the short name, as on a cluster
    assert stored["spec"]["maxUnavailable"] == 1 and stored["metadata"]["generation"] == 1
    k.kubectl("patch", "pdb", "adjust", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxUnavailable":"50%"}}')
    k.kubectl("patch", "pdb", "adjust", "-n", namespace, "--subresource=status", "--type=merge",
              "-p", '{"status":{"disruptionsAllowed":1,"currentHealthy":2,"desiredHealthy":1,"expectedPods":2}}')
    patched = k.kubectl_json("get", "pdb", "adjust", "-n", namespace)
    assert patched["spec"]["maxUnavailable"] == "50%" and patched["metadata"]["generation"] == 2
    assert patched["status"]["disruptionsAllowed"] == 1
    for spec, field in [({"minAvailable": 1, "maxUnavailable": 1}, "minAvailable and maxUnavailable cannot be both"),
                        ({"maxUnavailable": "150%"}, "spec.maxUnavailable"),
                        ({"minAvailable": -1}, "spec.minAvailable"),
                        ({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "a b"}}}, "spec.selector")]:
        bad = {**PDB, "metadata": {"name": "bad"}, "spec": spec}
        result = k.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
        assert result.returncode != 0 and "is invalid" in result.stderr and field in result.stderr, result.stderr


NETWORK_POLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "adjust"},
    "spec": {"podSelector": {"matchLabels": {"app": "adjust"}},
             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
                          "ports": [{"port": 8080}]}],
             "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"port": 4222, "endPort": 4223}, {"port": 53, "protocol": "UDP"}]}]}}


def test_a_network_policy_is_defaulted_as_on_a_cluster_and_checked(kube_cluster, namespace):
    k = kube_cluster
    k.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(NETWORK_POLICY))
    stored = k.kubectl_json("get", "netpol", "adjust", "-n", namespace)
    spec = stored["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]  # defaulted: there are egress rules
    assert spec["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert [p["protocol"] for p in spec["egress"][0]["ports"]] == ["TCP", "UDP"]
    assert stored["metadata"]["generation"] == 1
    ingress_only = {**NETWORK_POLICY, "metadata": {"name": "ingress-only"},
                    "spec": {"podSelector": {}, "ingress": NETWORK_POLICY["spec"]["ingress"]}}
    k.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ingress_only))
    assert k.kubectl_json("get", "netpol", "ingress-only", "-n", namespace)["spec"]["policyTypes"] == ["Ingress"]
    k.kubectl("patch", "netpol", "adjust", "-n", namespace, "--type=json",
              "-p", '[{"op":"replace","path":"/spec/ingress/0/ports/0/port","value":9090}]')
    assert k.kubectl_json("get", "netpol", "adjust", "-n", namespace)["metadata"]["generation"] == 2

    def refused(spec_change: dict, field: str) -> None:
        bad = {**NETWORK_POLICY, "metadata": {"name": "bad"}, "spec": {**NETWORK_POLICY["spec"], **spec_change}}
        result = k.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
        assert result.returncode != 0 and "is invalid" in result.stderr and field in result.stderr, result.stderr

    refused({"policyTypes": ["Ingress", "Sideways"]}, "spec.policyTypes[1]")
    refused({"ingress": [{"ports": [{"port": 70000}]}]}, "spec.ingress[0].ports[0].port")
    refused({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}, "spec.ingress[0].ports[0].protocol")
    refused({"egress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "spec.egress[0].ports[0].endPort")
    refused({"egress": [{"to": [{}]}]}, "spec.egress[0].to[0]")
    refused({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]},
            "spec.egress[0].to[0].ipBlock.except[0]")
    refused({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}, "spec.egress[0].to[0]")


def test_kubectl_explain_and_discovery_know_the_policy_kinds(kube_cluster):
    resources = kube_cluster.kubectl("api-resources", "-o", "wide").stdout
    assert re.search(r"^poddisruptionbudgets\s+pdb\s+policy/v1\s+true\s+PodDisruptionBudget", resources, re.M)
    assert re.search(r"^networkpolicies\s+netpol\s+networking.k8s.io/v1\s+true\s+NetworkPolicy", resources, re.M)
    explained = kube_cluster.kubectl("explain", "pdb.spec").stdout
    assert re.search(r"KIND:\s+PodDisruptionBudget", explained) and "maxUnavailable" in explained, explained
    explained = kube_cluster.kubectl("explain", "networkpolicy.spec.egress.ports").stdout
    assert re.search(r"GROUP:\s+networking.k8s.io\s+KIND:\s+NetworkPolicy", explained), explained
    assert "endPort" in explained


# ---------------------------------------------------------------------- RBAC and the audit log

def test_a_service_account_token_is_held_to_its_role_and_audited(kube_cluster, namespace):
    k = kube_cluster
    k.kubectl("create", "secret", "generic", "mt5-alice", "-n", namespace, "--from-literal=password=x")
    k.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    k.kubectl("create", "role", "secret-reader", "-n", namespace, "--verb=get", "--resource=secrets")
    k.kubectl("create", "rolebinding", "reader", "-n", namespace, "--role=secret-reader",
              f"--serviceaccount={namespace}:reader")
    reader = k.service_account_kubeconfig(namespace, "reader")

    allowed = k.kubectl("get", "secret", "mt5-alice", "-n", namespace, "-o", "name", kubeconfig=reader, check=False)
    assert allowed.returncode == 0, allowed.stderr
    refused = k.kubectl("get", "deployments", "-n", namespace, kubeconfig=reader, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
    assert f'User "system:serviceaccount:{namespace}:reader" cannot list resource "deployments"' in refused.stderr
    # A rule naming a verb is not a rule for another: get is not list.
    assert k.kubectl("get", "secrets", "-n", namespace, kubeconfig=reader, check=False).returncode != 0

    events = k.audit_events(user=f"system:serviceaccount:{namespace}:reader")
    seen = {(e["verb"], e["objectRef"]["resource"], e["responseStatus"]["code"])
            for e in events if e.get("objectRef")}
    assert ("get", "secrets", 200) in seen
    assert ("list", "deployments", 403) in seen


def test_an_unknown_token_is_unauthorized(kube_cluster, tmp_path):
    config = json.loads(kube_cluster.admin_kubeconfig.read_text())
    config["users"][0]["user"] = {"token": "not-a-token"}
    path = tmp_path / "bad.kubeconfig"
    path.write_text(json.dumps(config))
    result = kube_cluster.kubectl("get", "namespaces", kubeconfig=path, check=False)
    assert result.returncode != 0 and "Unauthorized" in result.stderr
