"""Rendering and installing the chart deploy/helm/mt5fleet with Helm itself (PyPI's helm-sdkpy:
Helm v4 as a library), for tests/test_helm_chart.py, tests/test_helm_monitoring_schemas.py and
tests/test_helm_operator_e2e.py.

helm-sdkpy has Lint, Install, Upgrade and Uninstall but no `helm template`, so rendering is an
Install into ``CaptureServer``: a stand-in API server that answers discovery for every kind the
chart may render and stores what it is sent. ``install_on`` installs into the real API server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

try:
    import helm_sdkpy as helm
except ImportError as missing:  # a failure, not a skip: the chart would go untested
    raise ImportError("helm-sdkpy is missing: ./dev test installs it "
                      "(pip install --ignore-requires-python helm-sdkpy==0.1.32)") from missing

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "mt5fleet"
RBAC_FILE = REPO / "deploy" / "rbac" / "operator-role.yaml"
ACCOUNT_ID = {"marketdata": {"oanda": {"accountId": "101-004-1234567-001"}}}  # the one required value
MONITORING_ON = {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                                "dashboards": {"enabled": True}}}
KUBE_VERSION = "1.36.0"


def merged(*layers: dict) -> dict:
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------- a stand-in API server
RESOURCES = {  # group/version: [(plural, kind, namespaced)]
    "v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
           ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True), ("events", "Event", True)],
    "apps/v1": [("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                     ("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True), ("podmonitors", "PodMonitor", True),
                                 ("prometheusrules", "PrometheusRule", True)],
}
KINDS = {plural: kind for resources in RESOURCES.values() for plural, kind, _ in resources}


class CaptureServer:
    """Just enough of the Kubernetes API for `helm install`: discovery, and create/get/list/
    update of whatever it is sent, kept in memory (Helm's release Secret included)."""

    def __init__(self, folder: Path) -> None:
        self.objects: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.kubeconfig = folder / "capture.kubeconfig"
        server = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "capture",
            "clusters": [{"name": "capture", "cluster": {"server": server}}],
            "users": [{"name": "capture", "user": {"token": "capture"}}],
            "contexts": [{"name": "capture", "context": {"cluster": "capture", "user": "capture"}}]}))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "json" not in (self.headers.get("Content-Type") or ""):
                    # client-go sends built-in kinds (Helm's release Secret) as protobuf: kept as
                    # an opaque object, which is all Helm needs back (it also accepts JSON).
                    name = f"opaque-{uuid.uuid4().hex[:8]}"
                    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
                return json.loads(data or b"{}")

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if (found := capture.discovery(path)) is not None:
                    return self._send(200, found)
                with capture.lock:
                    if path in capture.objects:
                        return self._send(200, capture.objects[path])
                    if path.rsplit("/", 1)[-1] in KINDS:  # a list, filtered by an equality label selector
                        wanted = dict(pair.split("=", 1) for pair in _query(query, "labelSelector").split(",") if pair)
                        items = [o for p, o in capture.objects.items() if p.rsplit("/", 1)[0] == path
                                 and wanted.items() <= (o["metadata"].get("labels") or {}).items()]
                        return self._send(200, {"kind": "List", "apiVersion": "v1", "items": items,
                                                "metadata": {"resourceVersion": "1"}})
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "code": 404, "message": f"{path} not found"})

            def do_POST(self) -> None:
                body = self._body()
                meta = body.setdefault("metadata", {})
                meta.setdefault("name", meta.get("generateName", "x") + uuid.uuid4().hex[:5])
                meta.update(uid=str(uuid.uuid4()), resourceVersion="1", creationTimestamp="2026-01-01T00:00:00Z")
                with capture.lock:
                    capture.objects[f"{self.path.partition('?')[0]}/{meta['name']}"] = body
                self._send(201, body)

            def do_PUT(self) -> None:
                body = self._body()
                with capture.lock:
                    capture.objects[self.path.partition("?")[0]] = body
                self._send(200, body)

            def do_PATCH(self) -> None:
                with capture.lock:
                    current = capture.objects.get(self.path.partition("?")[0], {})
                self._send(200 if current else 404, current or {"kind": "Status", "code": 404})

            def do_DELETE(self) -> None:
                with capture.lock:
                    capture.objects.pop(self.path.partition("?")[0], None)
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        return Handler

    def discovery(self, path: str) -> dict | None:
        if path == "/version":
            major, minor, _ = KUBE_VERSION.split(".")
            return {"major": major, "minor": minor, "gitVersion": f"v{KUBE_VERSION}", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            groups = [gv.split("/") for gv in RESOURCES if "/" in gv]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
        group_version = path.removeprefix("/api/").removeprefix("/apis/")
        if group_version in RESOURCES and path.startswith("/api"):
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": verbs}
                for plural, kind, namespaced in RESOURCES[group_version]]}
        return None

    def render(self, values: dict, release: str = "mt5fleet", namespace: str = "mt5fleet") -> tuple[list[dict], str]:
        """The chart's objects for ``values``, and its NOTES.txt, as `helm template` would give them."""
        with self.lock:
            self.objects.clear()
        config = helm.Configuration(namespace=namespace, kubeconfig=str(self.kubeconfig))
        release_info = asyncio.run(helm.Install(config).run(release, str(CHART), values=values, wait=False))
        documents = [doc for doc in yaml.safe_load_all(release_info["manifest"]) if doc]
        return documents, release_info.get("info", {}).get("notes", "")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _query(query: str, name: str) -> str:
    from urllib.parse import parse_qs

    return (parse_qs(query).get(name) or [""])[0]


def by_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


MONITORING_CRDS = [
    {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
     "metadata": {"name": f"{plural}.monitoring.coreos.com"},
     "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
              "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
              "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                  "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    for plural, kind, _ in RESOURCES["monitoring.coreos.com/v1"]]


def install_on(cluster, namespace: str, values: dict, release: str = "mt5fleet") -> tuple[Any, dict]:
    """`helm install RELEASE deploy/helm/mt5fleet -n NAMESPACE --create-namespace` with
    ``values`` into the real API server, as its administrator: (helm configuration, release).
    No kubelet runs pods there: nothing to wait for beyond the API server's answers."""
    crd = "tradingclients.mt5fleet.io"
    if values.get("crds", {}).get("install", True) and cluster.kubectl("get", "crd", crd, check=False).returncode == 0:
        # One CRD per cluster, and the session's tests share the cluster: whoever made it
        # (kubectl apply, another release), this release adopts it, as Helm adopts an
        # existing object that carries its ownership label and annotations.
        cluster.kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl("annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={release}",
                        f"meta.helm.sh/release-namespace={namespace}")
    config = helm.Configuration(namespace=namespace, kubeconfig=str(cluster.admin_kubeconfig))
    installed = asyncio.run(helm.Install(config).run(release, str(CHART), values=values,
                                                     create_namespace=True, wait=False))
    assert installed["info"]["status"] == "deployed"
    return config, installed


