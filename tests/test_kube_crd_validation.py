"""The TradingClient CRD's validation on the real Kubernetes API server (kube_harness),
on every way a client can write an object (issue 13).

Measured on this server (apiextensions-apiserver 0.36, kubectl 1.32), before the spec's
objects preserved unknown fields: a field the schema does not declare was pruned before
validation. Refused only where the request asks for strict field validation (kubectl's
default ``--validate=strict``, and every server-side apply, whose typed patch refuses it);
a plain API call (``fieldValidation`` absent: Warn) stored the object without the field
and a warning; ``kubectl --validate=false`` (Ignore) stored it silently. Now every object
of the spec keeps unknown fields and its first rule refuses them (``crd.unknown_field_rule``)
on every path below, naming the object that holds the field (``spec.risk``): once kept, no
server mechanism can name the key itself (CEL sees declared properties only; the
operator's reader names it, last test).
"""

from __future__ import annotations

import copy
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mt5fleet.operator.core import admission, models

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "deploy" / "helm" / "mt5fleet" / "crds"
PLURAL_PATH = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{{namespace}}/{models.PLURAL}"

# A cold cache builds the server inside the first test's set-up (see test_kube_apiserver.py).
pytestmark = pytest.mark.timeout(900)


def tradingclient(name: str) -> dict:
    spec = {"userId": name, "tier": "free",
            "broker": {"name": "Exness", "server": "Exness-MT5Trial", "accountType": "demo"},
            "account": {"login": 81234567, "passwordSecretRef": {"name": f"mt5-{name}", "key": "password"}},
            "symbols": {"trading": ["EURUSD", "GBPUSD"]},
            "risk": {"maxRiskPerTrade": 1.0}}
    return {"apiVersion": models.API_VERSION, "kind": models.KIND, "metadata": {"name": name}, "spec": spec}


@dataclass(frozen=True)
class Unknown:
    """A field the schema does not declare, at ``path`` below the spec."""
    path: tuple[str, ...]
    value: object
    holder: str                      # the object the server's error names

    def put(self, body: dict) -> dict:
        body = copy.deepcopy(body)
        target = body["spec"]
        for part in self.path[:-1]:
            target = target.setdefault(part, {})
        target[self.path[-1]] = self.value
        return body

    def merge_patch(self) -> dict:
        patch: dict = {self.path[-1]: self.value}
        for part in reversed(self.path[:-1]):
            patch = {part: patch}
        return {"spec": patch}

    def json_patch(self) -> list[dict]:
        return [{"op": "add", "path": "/spec/" + "/".join(self.path), "value": self.value}]


UNKNOWNS = {
    "top-level": Unknown(("pausd",), True, "spec"),                         # paused, misspelt
    "risk": Unknown(("risk", "maxLotSize"), 0.5, "spec.risk"),             # maxLot, misnamed
    "nested-twice": Unknown(("account", "passwordSecretRef", "kye"), "pw", "spec.account.passwordSecretRef"),
}


# ---------------------------------------------------------------------- raw API calls
@dataclass(frozen=True)
class Response:
    code: int
    body: dict
    warnings: list[str]


def api(cluster, method: str, path: str, body: object = None, content_type: str = "application/json",
        query: str = "") -> Response:
    """One request as the admin, without kubectl (and so without any fieldValidation
    unless ``query`` says so); a 429 just after the CRD is created is retried."""
    context = ssl.create_default_context(cafile=str(cluster.certs.ca_cert))
    context.load_cert_chain(str(cluster.certs.admin_cert), str(cluster.certs.admin_key))
    data = None if body is None else json.dumps(body).encode()
    for _ in range(30):
        request = urllib.request.Request(f"{cluster.server}{path}{query}", data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=20) as response:
                return Response(response.status, json.loads(response.read()), response.headers.get_all("Warning") or [])
        except urllib.error.HTTPError as error:
            if error.code != 429:
                return Response(error.code, json.loads(error.read()), error.headers.get_all("Warning") or [])
            time.sleep(0.5)
    raise AssertionError(f"{method} {path}: still 429 after 30 tries")


def stored(cluster, namespace: str, name: str) -> dict | None:
    response = api(cluster, "GET", PLURAL_PATH.format(namespace=namespace) + f"/{name}")
    return response.body if response.code == 200 else None


# ---------------------------------------------------------------------- every way to write an object
# Each returns the refusal's text (stderr or the response's message); "" if it succeeded.
Writer = Callable[..., str]


def kubectl_writer(*args: str) -> Writer:
    def write(cluster, namespace: str, body: dict, unknown: Unknown) -> str:
        result = cluster.kubectl(*args, "-n", namespace, "-f", "-", input=json.dumps(unknown.put(body)), check=False)
        return "" if result.returncode == 0 else result.stderr
    return write


def raw_writer(method: str, content_type: str, query: str = "", existing: bool = False) -> Writer:
    def write(cluster, namespace: str, body: dict, unknown: Unknown) -> str:
        path = PLURAL_PATH.format(namespace=namespace)
        if content_type == "application/merge-patch+json":
            payload: object = unknown.merge_patch()
        elif content_type == "application/json-patch+json":
            payload = unknown.json_patch()
        elif method == "PUT":
            payload = unknown.put(stored(cluster, namespace, body["metadata"]["name"]))
        else:
            payload = unknown.put(body)
        if existing or method == "PATCH":
            path += f"/{body['metadata']['name']}"
        response = api(cluster, method, path, payload, content_type, query)
        if response.code < 300:
            return ""
        assert response.code == 422, response.body  # Invalid, not a failure of the request itself
        causes = response.body["details"]["causes"]
        assert {(c["field"], c["reason"]) for c in causes} == {(unknown.holder, "FieldValueForbidden")}, causes
        return response.body["message"]
    return write


def kubectl_patch(cluster, namespace: str, body: dict, unknown: Unknown) -> str:
    result = cluster.kubectl("patch", "-n", namespace, "tradingclient", body["metadata"]["name"], "--type=merge",
                             "-p", json.dumps(unknown.merge_patch()), check=False)
    return "" if result.returncode == 0 else result.stderr


def kubectl_replace_unvalidated(cluster, namespace: str, body: dict, unknown: Unknown) -> str:
    current = stored(cluster, namespace, body["metadata"]["name"])
    result = cluster.kubectl("replace", "--validate=false", "-n", namespace, "-f", "-",
                             input=json.dumps(unknown.put(current)), check=False)
    return "" if result.returncode == 0 else result.stderr


APPLY = "application/apply-patch+yaml"
CREATES: dict[str, Writer] = {
    "kubectl-apply": kubectl_writer("apply"),                                   # --validate=strict
    "kubectl-apply-validate-false": kubectl_writer("apply", "--validate=false"),
    "kubectl-create-validate-false": kubectl_writer("create", "--validate=false"),
    "kubectl-server-side-apply": kubectl_writer("apply", "--server-side"),
    "kubectl-server-side-apply-validate-false": kubectl_writer("apply", "--server-side", "--validate=false"),
    "POST": raw_writer("POST", "application/json"),                             # no fieldValidation: Warn
    "POST-fieldValidation-Ignore": raw_writer("POST", "application/json", "?fieldValidation=Ignore"),
    "server-side-apply-PATCH": raw_writer("PATCH", APPLY, "?fieldManager=raw&fieldValidation=Ignore"),
}
UPDATES: dict[str, Writer] = {
    "kubectl-apply-validate-false": kubectl_writer("apply", "--validate=false"),
    "kubectl-server-side-apply-validate-false": kubectl_writer("apply", "--server-side", "--force-conflicts",
                                                               "--validate=false"),
    "kubectl-patch": kubectl_patch,
    "kubectl-replace-validate-false": kubectl_replace_unvalidated,
    "merge-PATCH": raw_writer("PATCH", "application/merge-patch+json"),
    "json-PATCH": raw_writer("PATCH", "application/json-patch+json"),
    "PUT": raw_writer("PUT", "application/json", existing=True),
    "server-side-apply-PATCH": raw_writer("PATCH", APPLY, "?fieldManager=raw&force=true"),
}


def assert_refused_naming(refusal: str, unknown: Unknown) -> None:
    assert refusal, "the API server accepted an unknown field"
    assert f"{unknown.holder}: Forbidden: unknown field (not one of: " in refusal, refusal


@pytest.mark.parametrize("unknown", list(UNKNOWNS.values()), ids=list(UNKNOWNS))
@pytest.mark.parametrize("write", list(CREATES.values()), ids=list(CREATES))
def test_a_new_object_with_an_unknown_field_is_refused_and_not_stored(crd, namespace, write, unknown):
    body = tradingclient("erin")
    assert_refused_naming(write(crd, namespace, body, unknown), unknown)
    assert stored(crd, namespace, "erin") is None


@pytest.mark.parametrize("unknown", list(UNKNOWNS.values()), ids=list(UNKNOWNS))
@pytest.mark.parametrize("write", list(UPDATES.values()), ids=list(UPDATES))
def test_an_unknown_field_in_an_update_is_refused_and_nothing_changes(crd, namespace, write, unknown):
    body = tradingclient("erin")
    crd.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    before = stored(crd, namespace, "erin")
    assert_refused_naming(write(crd, namespace, body, unknown), unknown)
    after = stored(crd, namespace, "erin")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"] == before["spec"]


def test_a_valid_object_written_without_field_validation_is_stored_defaulted_and_without_warnings(crd, namespace):
    response = api(crd, "POST", PLURAL_PATH.format(namespace=namespace), tradingclient("erin"))
    assert response.code == 201 and response.warnings == [], response
    spec = stored(crd, namespace, "erin")["spec"]
    assert spec["risk"] == {"maxRiskPerTrade": 1.0, "maxDailyLoss": 0, "maxDrawdown": 0, "maxOpenPositions": 0,
                            "allowedSymbols": [], "allowNewsTrading": False, "maxSpreadPoints": 0, "maxLot": 0,
                            "maxDeviationPoints": 20}
    assert spec["paused"] is False and spec["account"]["passwordSecretRef"]["key"] == "password"
    assert spec["preferences"]["sizingMode"] == "riskPercent" and spec["broker"]["symbolMap"] == {}
    # A merge patch of known fields still goes through, and kubectl shows the change.
    patch = {"spec": {"risk": {"maxLot": 2.5}, "paused": True}}
    assert api(crd, "PATCH", PLURAL_PATH.format(namespace=namespace) + "/erin", patch,
               "application/merge-patch+json").code == 200
    assert crd.kubectl_json("get", "tc", "erin", "-n", namespace)["spec"]["risk"]["maxLot"] == 2.5


# ---------------------------------------------------------------------- CEL rules name their field
@pytest.mark.parametrize(("rule", "change"), [
    (models.CEL_RULES[0], {"symbols": {"trading": ["EURUSD"], "monitoring": ["USDJPY", "EURUSD"]}}),
    (models.CEL_RULES[1], {"symbols": {"trading": ["EURUSD", "GBPUSD", "EURUSD"]}}),
    (models.CEL_RULES[2], {"risk": {"allowedSymbols": ["AUDCAD"]}}),
], ids=["monitoring-repeats-trading", "trading-repeats", "allowed-outside-trading"])
def test_a_cel_refusal_names_the_field_it_blames(crd, namespace, rule, change):
    body = tradingclient("erin")
    body["spec"].update(change)
    field = f"spec{rule.field_path}"
    refused = crd.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode != 0 and f"{field}: Invalid value: " in refused.stderr, refused.stderr
    assert rule.message in refused.stderr or "already traded" in refused.stderr, refused.stderr
    response = api(crd, "POST", PLURAL_PATH.format(namespace=namespace), body)
    assert response.code == 422, response
    assert [(c["field"], c["reason"]) for c in response.body["details"]["causes"]] == [(field, rule.reason)]
    assert stored(crd, namespace, "erin") is None


# ---------------------------------------------------------------------- manifests apply in one go
def kubernetes_manifests() -> list[Path]:
    """Every file under deploy/ and examples/ that holds Kubernetes objects (the chart's
    templates, Prometheus rule files and promtool tests are not objects); CRDs first, as Helm does."""
    found = []
    for path in sorted([*(REPO / "deploy").rglob("*"), *(REPO / "examples").rglob("*")]):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file() or "templates" in path.parts:
            continue  # a chart's templates are Helm's to render (tests/test_helm_chart.py)
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        if docs and all(isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc for doc in docs):
            found.append((not any(doc["kind"] == "CustomResourceDefinition" for doc in docs), path))
    return [path for _, path in sorted(found)]


def test_every_manifest_applies_in_one_go_on_a_new_cluster(tmp_path):
    """A new API server of its own (nothing created beforehand, not even the operator's
    namespace): one ``kubectl apply -f`` per file, each succeeding the first time."""
    from kube_harness import running_cluster

    manifests = kubernetes_manifests()
    relative = {str(path.relative_to(REPO)) for path in manifests}
    assert {"deploy/helm/mt5fleet/crds/tradingclients.mt5fleet.io.yaml", "deploy/rbac/operator-role.yaml",
            "examples/secrets.yaml", "examples/alice-free.yaml"} <= relative, relative
    with running_cluster(tmp_path / "kube", log=lambda _: None) as cluster:
        for path in manifests:
            result = cluster.kubectl("apply", "-f", str(path), check=False)
            assert result.returncode == 0, f"kubectl apply -f {path.relative_to(REPO)}:\n{result.stderr}"
        for path in manifests:  # and again, as after every upgrade: nothing new
            again = cluster.kubectl("apply", "-f", str(path)).stdout.strip().split("\n")
            # A Secret's stringData is not stored as such, so kubectl always sends it again.
            assert all(line.endswith((" unchanged", " configured")) for line in again), again
        names = cluster.kubectl("get", "tc", "-n", "default", "-o", "name").stdout.split()
        assert sorted(names) == [f"tradingclient.{models.GROUP}/{n}" for n in ("alice", "bob", "carol", "dave")]
        assert cluster.kubectl("get", "serviceaccount", "mt5fleet-operator", "-n", "mt5fleet",
                               check=False).returncode == 0


# ---------------------------------------------------------------------- the operator names the key
@pytest.mark.parametrize("unknown", list(UNKNOWNS.values()), ids=list(UNKNOWNS))
def test_the_operator_marks_a_stored_object_with_an_unknown_field_invalid_naming_the_key(unknown):
    """Should an object with an unknown field ever be stored (a CRD older than this
    operator), the reader kopf's bodies go through names the key the server could not."""
    body = unknown.put(tradingclient("erin"))
    with pytest.raises(models.SpecError) as refused:
        admission.parse_resource(body, rules=False)
    assert refused.value.problems == [f"spec.{'.'.join(unknown.path)}: unknown field"]
