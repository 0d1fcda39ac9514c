"""The Helm chart deploy/helm/mt5fleet, checked with Helm itself (PyPI's helm-sdkpy: Helm v4
as a library; ./dev test installs it, its metadata asks for Python 3.12 but it runs on 3.11).

helm-sdkpy has Lint, Install, Upgrade and Uninstall but no `helm template`, so rendering is an
Install into ``CaptureServer``: a stand-in API server that answers discovery for every kind the
chart may render (PodDisruptionBudget, NetworkPolicy and the prometheus-operator kinds
included) and stores what it is sent. The real API server (``kube_cluster``) then takes a real
install, upgrade and uninstall of the chart as it is by default (PodDisruptionBudgets and
NetworkPolicies included: that server serves policy/v1 and networking.k8s.io/v1), with
minimal CRDs for the monitoring.coreos.com kinds. tests/test_helm_operator_e2e.py installs
it there too and runs the operator as the installed Deployment says.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helm_chart import (
    ACCOUNT_ID,
    CHART,
    KUBE_VERSION,
    MONITORING_CRDS,
    MONITORING_ON,
    RBAC_FILE,
    REPO,
    CaptureServer,
    by_kind,
    helm,
    install_on,
    merged,
)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Iterator[CaptureServer]:
    server = CaptureServer(tmp_path_factory.mktemp("helm"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def defaults(capture) -> list[dict]:
    return capture.render(ACCOUNT_ID)[0]


@pytest.fixture(scope="module")
def monitored(capture) -> list[dict]:
    return capture.render(merged(ACCOUNT_ID, MONITORING_ON))[0]


def containers(documents: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    for name, deployment in by_kind(documents, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield name, pod, container


# ---------------------------------------------------------------------- lint, package, values
def test_helm_lint_finds_nothing_to_warn_about():
    config = helm.Configuration(namespace="default")
    result = asyncio.run(helm.Lint(config).run(str(CHART)))
    # Severity 1 is INFO (e.g. "icon is recommended"); 2 WARNING and 3 ERROR fail, as `helm lint
    # --strict` would. helm-sdkpy drops the messages' text: render the chart to see the error.
    assert [(m["Severity"], m["Path"]) for m in result["Messages"] if m["Severity"] >= 2] == []
    assert not result["Errors"]


def test_app_version_is_the_package_version():
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == version


def _leaves(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_every_value_is_documented_with_a_param():
    text = (CHART / "values.yaml").read_text()
    params = re.findall(r"^\s*## @param (\S+) \S", text, re.M)
    values = yaml.safe_load(text)
    undocumented = [leaf for leaf in _leaves(values)
                    if not any(leaf == p or leaf.startswith(p + ".") for p in params)]
    assert undocumented == []
    known = set(_leaves(values))
    stale = [p for p in params if not any(leaf == p or leaf.startswith(p + ".") for leaf in known)]
    assert stale == [], "@param for a value that does not exist"
    assert len(params) == len(set(params))


def test_the_schema_is_draft_07_covers_every_value_and_accepts_the_defaults():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    undescribed: list[str] = []

    def walk(value: Any, node: dict, path: str) -> None:
        if not isinstance(value, dict) or "properties" not in node:
            return  # a leaf, or a free-form object (resources, security contexts, selectors)
        for key, child in value.items():
            assert key in node["properties"], f"{path}{key}: not in values.schema.json"
            if not node["properties"][key].get("description") and node["properties"][key].get("type") != "string":
                undescribed.append(f"{path}{key}")
            walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")
    assert undescribed == []


def test_the_schema_knows_every_tier_setting_the_operator_does():
    from dataclasses import fields

    from mt5fleet.operator.core.tiers import Tier

    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = set(schema["properties"]["tiers"]["additionalProperties"]["properties"])
    camel = {f.name.split("_")[0] + "".join(p.title() for p in f.name.split("_")[1:]) for f in fields(Tier)}
    assert settings == camel - {"name"}


def test_a_wrong_value_is_refused_with_a_clear_message(capture):
    with pytest.raises(helm.HelmError) as refused:
        capture.render(merged(ACCOUNT_ID, {"operator": {"replicaCount": "two"}}))
    message = str(refused.value)
    assert "operator" in message and "replicaCount" in message and "integer" in message, message
    with pytest.raises(helm.HelmError, match="tiers"):
        capture.render(merged(ACCOUNT_ID, {"tiers": {"pro": {"maxTradingPair": 6}}}))  # a typo
    with pytest.raises(helm.HelmError, match="accountId"):
        capture.render({})  # the OANDA feed without its account: refused before anything is applied


# ---------------------------------------------------------------------- rendered objects
@pytest.mark.parametrize("variant", ["defaults", "monitored"])
def test_rendered_objects_are_valid_kubernetes_objects(variant, request):
    import kubernetes_validate

    documents = request.getfixturevalue(variant)
    for doc in documents:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # not Kubernetes' own: test_monitoring_objects checks them
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    kinds = {doc["kind"] for doc in documents}
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding",
            "ClusterRole", "ClusterRoleBinding", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds


def test_every_component_runs_with_the_pod_security_and_probes(defaults):
    deployments = by_kind(defaults, "Deployment")
    assert set(deployments) == {f"mt5fleet-{c}" for c in ("operator", "adjust", "marketdata", "feedback",
                                                           "catchup", "health", "calendar")}
    for name, pod, container in containers(defaults):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, name
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        tmp = {v["name"]: v for v in pod["volumes"]}[{m["mountPath"]: m["name"]
                                                      for m in container["volumeMounts"]}["/tmp"]]
        assert "emptyDir" in tmp, name
        assert all(m.get("readOnly") for m in container["volumeMounts"] if m["mountPath"] != "/tmp"), name
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert _flag(container["args"], "--http-port") == str(port), name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        if name == "mt5fleet-operator":
            assert pod["automountServiceAccountToken"] is True
        else:  # the workers never talk to the Kubernetes API
            assert pod["automountServiceAccountToken"] is False
            assert pod["serviceAccountName"] == "mt5fleet-worker"
    assert by_kind(defaults, "ServiceAccount")["mt5fleet-worker"]["automountServiceAccountToken"] is False


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_the_rendered_commands_are_what_mt5fleet_s_own_parser_accepts(capture):
    from mt5fleet.launcher.cli import build_parser

    values = merged(ACCOUNT_ID, {
        "nats": {"urls": ["tls://nats-0.nats:4222", "tls://nats-1.nats:4222"], "tls": {"caSecret": {"name": "nats-ca"}},
                 "agents": {"urls": ["tls://nats.example.com:4222"], "caSecret": {"name": "agent-ca"}},
                 "jetstream": {"replicas": 1, "config": "[streams.prices]\nmax_age_s = 60\n"}},
        "tiers": {"pro": {"maxTradingPairs": 6}}, "marketdata": {"symbols": ["EURUSD", "GBPUSD"]}})
    documents, _ = capture.render(values)
    parser = build_parser()
    parsed = {}
    for name, _, container in containers(documents):
        assert "command" not in container  # the image's entry point is `mt5fleet`
        parsed[name] = parser.parse_args(container["args"])
    operator = parsed["mt5fleet-operator"]
    assert operator.nats == ["tls://nats-0.nats:4222", "tls://nats-1.nats:4222"]
    assert operator.agent_nats == ["tls://nats.example.com:4222"] and str(operator.agent_ca).endswith("ca.crt")
    assert operator.worker_deployment == "mt5fleet-adjust" and operator.lease == "mt5fleet-operator"
    assert operator.replicas == 1 and str(operator.jetstream_config).endswith("jetstream.toml")
    assert operator.tls_ca and operator.creds and operator.trust and operator.tiers
    assert not operator.local and not operator.no_leader_election
    for name, args in parsed.items():
        if name != "mt5fleet-operator":
            assert args.kind == name.removeprefix("mt5fleet-") and args.server == operator.nats and args.replicas == 1
    assert parsed["mt5fleet-marketdata"].feed == "oanda" and parsed["mt5fleet-marketdata"].symbols == "EURUSD,GBPUSD"
    # Every file an argument names is mounted where it says, from the Secret or ConfigMap it should be.
    config = by_kind(documents, "ConfigMap")["mt5fleet-config"]["data"]
    assert yaml.safe_load(config["tiers.yaml"]) == {"tiers": {"pro": {"maxTradingPairs": 6}}}
    assert config["jetstream.toml"] == values["nats"]["jetstream"]["config"]
    for name, _, container in containers(documents):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        files = [a for a in container["args"] if a.startswith("/etc/mt5fleet/")]
        assert files and all(any(f.startswith(m + "/") for m in mounts) for f in files), (name, files)
    env = {e["name"]: e for _, _, c in containers(documents) for e in c.get("env", [])}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["OANDA_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "mt5fleet-oanda", "key": "token"}
    operator_pod = by_kind(documents, "Deployment")["mt5fleet-operator"]["spec"]["template"]["spec"]
    trust = {v["name"]: v for v in operator_pod["volumes"]}
    assert trust["trust"]["secret"]["secretName"] == "mt5fleet-trust"
    for name, pod, _ in containers(documents):  # the signing keys reach the operator only
        if name != "mt5fleet-operator":
            assert "mt5fleet-trust" not in json.dumps(pod["volumes"])


def test_the_operator_sizes_the_adjust_pool_and_the_chart_never_resets_it(defaults):
    deployments = by_kind(defaults, "Deployment")
    assert deployments["mt5fleet-operator"]["spec"]["replicas"] == 2
    assert "replicas" not in deployments["mt5fleet-adjust"]["spec"]  # an upgrade keeps the operator's count
    assert deployments["mt5fleet-feedback"]["spec"]["replicas"] == 1


def test_the_chart_s_operator_rbac_is_deploy_rbac(defaults):
    """deploy/rbac/operator-role.yaml is what the audit-log test proves against a real API
    server; the chart must grant exactly that (release "mt5fleet" in namespace "mt5fleet")."""
    committed = [doc for doc in yaml.safe_load_all(RBAC_FILE.read_text()) if doc]
    for kind in ("Role", "ClusterRole"):
        [chart] = by_kind(defaults, kind).values()
        [file] = [doc for doc in committed if doc["kind"] == kind]
        assert chart["rules"] == file["rules"], kind
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        [chart] = by_kind(defaults, kind).values()
        [file] = [doc for doc in committed if doc["kind"] == kind]
        assert chart["subjects"] == file["subjects"] and chart["roleRef"]["kind"] == file["roleRef"]["kind"], kind
    bound = {b["subjects"][0]["name"] for b in by_kind(defaults, "RoleBinding").values()}
    assert bound == {"mt5fleet-operator"}  # no role for the workers' account


def test_the_crd_is_the_generated_one_kept_on_uninstall_and_optional(capture, defaults):
    from mt5fleet.operator.core import crd

    [rendered] = by_kind(defaults, "CustomResourceDefinition").values()
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    generated = yaml.safe_load(crd.render())
    rendered = copy.deepcopy(rendered)
    rendered["metadata"].pop("annotations")
    rendered["metadata"]["labels"] = {k: v for k, v in rendered["metadata"]["labels"].items()
                                      if k in generated["metadata"]["labels"]}
    assert rendered == generated
    without, _ = capture.render(merged(ACCOUNT_ID, {"crds": {"install": False}}))
    assert not by_kind(without, "CustomResourceDefinition")


def test_network_policies_allow_nats_dns_and_scrapes_from_monitoring_only(defaults):
    policies = by_kind(defaults, "NetworkPolicy")
    assert set(policies) == set(by_kind(defaults, "Deployment"))
    for name, policy in policies.items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        [ingress] = spec["ingress"]
        monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        assert ingress["from"] == [{"namespaceSelector": monitoring}]
        port = by_kind(defaults, "Service")[name]["spec"]["ports"][0]["port"]
        assert ingress["ports"] == [{"port": port, "protocol": "TCP"}]
        ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
        extra = {"mt5fleet-operator": [443, 6443], "mt5fleet-marketdata": [443],
                 "mt5fleet-calendar": [443]}.get(name, [])
        assert ports == sorted([4222, 53, 53, *extra]), name


def test_the_calendar_worker_downloads_its_url_or_reads_a_mounted_configmap(capture, defaults):
    """Issue 17: `mt5fleet worker calendar`, one replica like the other workers (pod security,
    probes, metrics Service, budget, policy: the tests above), configured from values."""
    from mt5fleet.launcher.cli import build_parser

    parser = build_parser()
    deployment = by_kind(defaults, "Deployment")["mt5fleet-calendar"]
    assert deployment["spec"]["replicas"] == 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = parser.parse_args(container["args"])
    assert (args.kind, args.calendar_source) == ("calendar", "https://nfs.faireconomy.media/ff_calendar_thisweek.json")
    assert (args.calendar_interval, args.news_before_min, args.news_after_min, args.calendar_format) == (
        900, 15, 15, "")
    [download] = [r for r in by_kind(defaults, "NetworkPolicy")["mt5fleet-calendar"]["spec"]["egress"]
                  if r.get("to", [{}])[0].get("ipBlock")]
    assert download == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    assert "mt5fleet-calendar" in by_kind(defaults, "Service")

    air_gapped = merged(ACCOUNT_ID, {"calendar": {
        "source": {"configMap": {"name": "fx-calendar", "key": "week.xml"}}, "refreshSeconds": 300,
        "newsWindow": {"beforeMinutes": 30, "afterMinutes": 5}}})
    documents, notes = capture.render(air_gapped)
    pod = by_kind(documents, "Deployment")["mt5fleet-calendar"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = parser.parse_args(container["args"])
    assert (args.calendar_source, args.calendar_interval, args.news_before_min, args.news_after_min) == (
        "/etc/mt5fleet/calendar/week.xml", 300, 30, 5)
    mount = {m["name"]: m for m in container["volumeMounts"]}["calendar-source"]
    assert mount == {"name": "calendar-source", "mountPath": "/etc/mt5fleet/calendar", "readOnly": True}
    assert "subPath" not in mount  # a changed ConfigMap reaches the file, read at the next refresh
    volume = {v["name"]: v for v in pod["volumes"]}["calendar-source"]
    assert volume["configMap"] == {"name": "fx-calendar", "items": [{"key": "week.xml", "path": "week.xml"}]}
    egress = by_kind(documents, "NetworkPolicy")["mt5fleet-calendar"]["spec"]["egress"]
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == [53, 53, 4222]  # no download: no 443
    assert "/etc/mt5fleet/calendar/week.xml every 300 s" in notes

    off, notes = capture.render(merged(ACCOUNT_ID, {"calendar": {"enabled": False}}))
    for kind in ("Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"):
        assert "mt5fleet-calendar" not in by_kind(off, kind), kind
    assert "no news window is enforced" in notes
    with pytest.raises(helm.HelmError, match="calendar"):
        capture.render(merged(ACCOUNT_ID, {"calendar": {"source": {"url": "ftp://calendar.example/week.json"}}}))
    with pytest.raises(helm.HelmError, match="calendar"):
        capture.render(merged(ACCOUNT_ID, {"calendar": {"replicaCount": 2}}))
    with pytest.raises(helm.HelmError, match="calendar.source.url or calendar.source.configMap.name"):
        capture.render(merged(ACCOUNT_ID, {"calendar": {"source": {"url": ""}}}))


def test_approved_brokers_reach_the_operator_and_the_notes_say_when_every_broker_is_approved(capture, defaults):
    from mt5fleet.operator.app.runtime import load_brokers
    from mt5fleet.operator.core.brokers import ANY_BROKER, ApprovedBrokers

    raw = by_kind(defaults, "ConfigMap")["mt5fleet-config"]["data"]["brokers.yaml"]
    assert ANY_BROKER == _brokers(raw, load_brokers)
    values = merged(ACCOUNT_ID, {"approvedBrokers": {"companies": ["IC Markets"], "servers": ["Pepperstone-*"]}})
    documents, notes = capture.render(values)
    raw = by_kind(documents, "ConfigMap")["mt5fleet-config"]["data"]["brokers.yaml"]
    assert _brokers(raw, load_brokers) == ApprovedBrokers(("IC Markets",), ("Pepperstone-*",))
    assert "every broker is approved" not in notes
    assert "every broker is approved" in capture.render(ACCOUNT_ID)[1]


def _brokers(raw: str, load: Any) -> Any:
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "brokers.yaml"
        path.write_text(raw)
        return load(path)


def test_pod_disruption_budgets_never_block_a_drain(defaults):
    budgets = by_kind(defaults, "PodDisruptionBudget")
    assert set(budgets) == set(by_kind(defaults, "Deployment"))
    assert all(b["spec"]["maxUnavailable"] == 1 and "minAvailable" not in b["spec"] for b in budgets.values())


def test_monitoring_objects(monitored, defaults):
    assert not [d for d in defaults if d["apiVersion"].startswith("monitoring.coreos.com/")]  # off by default
    monitors = by_kind(monitored, "ServiceMonitor")
    services = by_kind(monitored, "Service")
    assert set(monitors) == set(services) == set(by_kind(monitored, "Deployment"))
    for name, monitor in monitors.items():
        assert monitor["spec"]["selector"]["matchLabels"].items() <= services[name]["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == services[name]["spec"]["ports"][0]["name"]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert re.fullmatch(".*mt5fleet.*", name)  # the job label the alert Mt5fleetWorkerDown matches
    [rule] = by_kind(monitored, "PrometheusRule").values()
    shipped = yaml.safe_load((CHART / "files" / "alerts" / "mt5fleet.rules.yaml").read_text())
    assert rule["spec"] == shipped  # embedded as it is: {{ $labels... }} stays for Prometheus
    assert "{{ $labels" in json.dumps(rule["spec"])
    dashboards = [c for c in by_kind(monitored, "ConfigMap").values()
                  if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped_dashboards = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    assert sorted(name for c in dashboards for name in c["data"]) == shipped_dashboards
    for dashboard in dashboards:
        [(name, text)] = dashboard["data"].items()
        assert json.loads(text) == json.loads((CHART / "files" / "dashboards" / name).read_text())


def test_a_pod_monitor_instead_of_service_monitors(capture):
    documents, _ = capture.render(merged(ACCOUNT_ID, {"monitoring": {"podMonitor": {"enabled": True}}}))
    [monitor] = by_kind(documents, "PodMonitor").values()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    for _, _, container in containers(documents):  # it selects every pod, all with a port named http
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels(documents, container).items()
        assert "http" in {p["name"] for p in container["ports"]}
    with pytest.raises(helm.HelmError, match="not both"):
        capture.render(merged(ACCOUNT_ID, {"monitoring": {"podMonitor": {"enabled": True},
                                                          "serviceMonitor": {"enabled": True}}}))


def pod_labels(documents: list[dict], container: dict) -> dict:
    for deployment in by_kind(documents, "Deployment").values():
        if container in deployment["spec"]["template"]["spec"]["containers"]:
            return deployment["spec"]["template"]["metadata"]["labels"]
    raise AssertionError("no such container")


def test_notes_tell_how_to_create_a_tradingclient_and_hand_over_the_agent_files(capture):
    _, notes = capture.render(ACCOUNT_ID)
    from mt5fleet.operator.adapters.appliers import BOOTSTRAP_KEY, CA_KEY, CREDS_KEY, bootstrap_secret_name

    assert "kubectl -n mt5fleet apply -f examples/bob-pro.yaml" in notes
    assert f"S={bootstrap_secret_name('bob')}" in notes
    for key in (CREDS_KEY, CA_KEY, BOOTSTRAP_KEY):
        assert key.replace(".", "\\.") in notes
    assert (CHART / "examples" / "bob-pro.yaml").is_file()
    examples = [doc for p in (CHART / "examples").glob("*.yaml") for doc in yaml.safe_load_all(p.read_text()) if doc]
    tiers = {doc["spec"]["tier"] for doc in examples if doc["kind"] == "TradingClient"}
    assert {"free", "pro", "enterprise"} <= tiers


# ---------------------------------------------------------------------- the platform guide
GUIDE = REPO / "docs" / "getting-started-platform-operator.md"


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """The key paths to the leaves of ``tree`` (keys may hold dots: label names)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _paths(value, (*prefix, key))
    else:
        yield list(prefix)


def _has_value(tree: Any, path: list[str]) -> bool:
    for depth, key in enumerate(path):
        if not isinstance(tree, dict):
            return False
        if key not in tree:
            return tree == {} and depth > 0  # a free-form map (resources, selectors, tiers)
        tree = tree[key]
    return True


def test_the_platform_guide_starts_with_helm_install_and_names_only_values_the_chart_has(capture):
    text = GUIDE.read_text()
    first = text.split("\n## ")[1]
    assert first.startswith("1. Install with Helm")
    assert "helm install mt5fleet deploy/helm/mt5fleet -n mt5fleet --create-namespace -f my-values.yaml" in first
    assert "helm install nats nats/nats -n nats --create-namespace -f nats-values.yaml" in first
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Every value the guide names in backticks (`operator.usersPerWorker`, `crds.install: false`).
    named = {m for m in re.findall(r"`([a-z][A-Za-z]*(?:\.[A-Za-z]+)+)(?::[^`]*)?`", text)
             if m.split(".")[0] in values and not m.endswith((".com", ".local"))}
    assert len(named) > 10 and [n for n in sorted(named) if not _has_value(values, n.split("."))] == []
    # my-values.yaml: only existing values, accepted by the schema, and the Secrets the guide
    # creates are the ones the chart then mounts.
    [block] = re.findall(r"```yaml\n(# my-values.yaml\n.*?)```", text, re.S)
    mine = yaml.safe_load(block)
    assert [path for path in _paths(mine) if not _has_value(values, path)] == []
    documents, _ = capture.render(mine)
    created = set(re.findall(r"kubectl -n mt5fleet create secret generic (\S+)", first))
    mounted = {v["secret"]["secretName"] for _, pod, _ in containers(documents) for v in pod["volumes"]
               if "secret" in v}
    mounted |= {e["valueFrom"]["secretKeyRef"]["name"] for _, _, c in containers(documents) for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})}
    assert mounted == created
    keys = dict(re.findall(r"secret generic (\S+) --from-(?:file|literal)=(?:\S+/)?([\w.]+)", first))
    assert keys["mt5fleet-trust"] == values["credentials"]["trust"]["key"]
    assert keys["mt5fleet-service-creds"] == values["credentials"]["operator"]["key"]
    assert keys["mt5fleet-worker-creds"] == values["credentials"]["workers"]["key"]
    assert keys["mt5fleet-oanda"] == values["marketdata"]["oanda"]["tokenSecret"]["key"]


def test_the_guide_s_nats_values_script_writes_the_trust_chain_into_the_official_chart_s_values(tmp_path):
    import runpy
    from contextlib import chdir

    from mt5fleet.operator.adapters.nats_accounts import create_trust_chain

    [script] = re.findall(r"```python\n(.*?nats-values\.yaml.*?)```", GUIDE.read_text(), re.S)
    chain = create_trust_chain()
    (tmp_path / "trust.json").write_text(chain.to_json())
    (tmp_path / "nats-values.py").write_text(script)
    with chdir(tmp_path):
        runpy.run_path("nats-values.py")
    written = yaml.safe_load((tmp_path / "nats-values.yaml").read_text())
    config = written["config"]
    assert config["jetstream"]["enabled"] and config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["merge"]["operator"] == chain.operator_jwt
    assert config["merge"]["system_account"] == chain.system_account.public_key
    assert {chain.system_account.public_key, chain.app_account.public_key} <= set(config["merge"]["resolver_preload"])
    assert config["resolver"]["enabled"] and config["resolver"]["merge"]["type"] == "full"


# ---------------------------------------------------------------------- the real API server
def test_install_upgrade_and_uninstall_on_a_real_api_server(kube_cluster):
    namespace = f"helm-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": MONITORING_CRDS}))
    values = merged(ACCOUNT_ID, MONITORING_ON)

    def get(kind: str, name: str) -> dict:
        return kube_cluster.kubectl_json("get", kind, name, "-n", namespace)

    config, _ = install_on(kube_cluster, namespace, values)
    deployments = kube_cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]
    components = {d["metadata"]["name"] for d in deployments}
    assert len(components) == 7 and "mt5fleet-calendar" in components
    # The budgets and policies, as the server stored them (defaulted, validated).
    budgets = {b["metadata"]["name"]: b for b in kube_cluster.kubectl_json("get", "pdb", "-n", namespace)["items"]}
    assert set(budgets) == components
    assert all(b["spec"]["maxUnavailable"] == 1 and b["metadata"]["generation"] == 1 for b in budgets.values())
    policies = {p["metadata"]["name"]: p
                for p in kube_cluster.kubectl_json("get", "networkpolicy", "-n", namespace)["items"]}
    assert set(policies) == components
    operator_egress = policies["mt5fleet-operator"]["spec"]["egress"]
    assert {"port": 6443, "protocol": "TCP"} in [p for rule in operator_egress for p in rule["ports"]]
    assert policies["mt5fleet-adjust"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert get("deployment", "mt5fleet-operator")["spec"]["replicas"] == 2
    assert get("deployment", "mt5fleet-adjust")["spec"]["replicas"] == 1  # the server's default; then the operator's
    role = get("role", "mt5fleet-operator")
    committed = by_kind([d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d], "Role")
    assert role["rules"] == committed["mt5fleet-operator"]["rules"]
    assert get("serviceaccount", "mt5fleet-worker")["automountServiceAccountToken"] is False
    assert get("servicemonitor", "mt5fleet-operator")["spec"]["endpoints"][0]["path"] == "/metrics"
    assert get("prometheusrule", "mt5fleet")["spec"]["groups"]
    assert get("configmap", "mt5fleet-dashboard-fleet-overview")["metadata"]["labels"]["grafana_dashboard"] == "1"
    crd = kube_cluster.kubectl_json("get", "crd", "tradingclients.mt5fleet.io")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The operator scales the pool; an upgrade with a changed value must not reset it.
    kube_cluster.kubectl("scale", "deployment", "mt5fleet-adjust", "--replicas=4", "-n", namespace)
    upgraded = asyncio.run(helm.Upgrade(config).run(
        "mt5fleet", str(CHART), values=merged(values, {"operator": {"replicaCount": 3}, "feedback": {"replicaCount": 2},
                                                        "tiers": {"pro": {"maxTradingPairs": 6}}}), wait=False))
    assert upgraded["version"] == 2 and upgraded["info"]["status"] == "deployed"
    assert get("deployment", "mt5fleet-operator")["spec"]["replicas"] == 3
    assert get("deployment", "mt5fleet-feedback")["spec"]["replicas"] == 2
    assert get("deployment", "mt5fleet-adjust")["spec"]["replicas"] == 4
    tiers = yaml.safe_load(get("configmap", "mt5fleet-config")["data"]["tiers.yaml"])
    assert tiers == {"tiers": {"pro": {"maxTradingPairs": 6}}}

    asyncio.run(helm.Uninstall(config).run("mt5fleet", wait=False))
    assert kube_cluster.kubectl("get", "deployment", "mt5fleet-operator", "-n", namespace,
                                check=False).returncode != 0
    assert kube_cluster.kubectl_json("get", "crd", "tradingclients.mt5fleet.io")["metadata"]["name"]
