"""A real Kubernetes API server for tests: etcd plus tests/kube/apiserver (built from
Debian's packages by kube_build.py) on free loopback ports, with TLS, RBAC enforced for
bearer tokens and the audit log on.

    with running_cluster(tmp_path) as cluster:
        cluster.kubectl("apply", "-f", "deploy/helm/mt5fleet/crds/")
        operator = cluster.service_account_kubeconfig("mt5fleet", "mt5fleet-operator")
        cluster.kubectl("get", "secrets", "-n", "mt5fleet", kubeconfig=operator, check=False)
        cluster.audit_events(user="system:serviceaccount:mt5fleet:mt5fleet-operator")

``conftest.py`` offers it as the session fixture ``kube_cluster``. What the server serves
and what it does not (no controllers: no garbage collection, no Pods) is in
docs/testing.md.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kube_build import ensure_server, ensure_tool
from kube_certs import ClusterCerts, make_certs

OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "mt5fleet", "mt5fleet-operator"
# Metadata of every request (who, verb, resource, response code), written as it completes.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


class ClusterError(RuntimeError):
    """The server or etcd did not start; the message ends with its log."""


@dataclass
class KubeCluster:
    """A running etcd + API server. Paths are inside ``workdir``."""

    workdir: Path
    server: str
    certs: ClusterCerts
    kubectl_path: str
    admin_kubeconfig: Path
    audit_log: Path
    token_file: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    # The ServiceAccount kubeconfig written at start: mt5fleet/mt5fleet-operator's token.
    operator_kubeconfig: Path | None = None

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs the real kubectl against this server (admin unless ``kubeconfig`` says else)."""
        command = [self.kubectl_path, "--kubeconfig", str(kubeconfig or self.admin_kubeconfig),
                   "--cache-dir", str(self.workdir / "kubectl-cache"), *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout,
                                env=_without_kubeconfig())
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout)

    @contextmanager
    def watch(self, *args: str, kubeconfig: Path | None = None) -> Iterator[KubectlWatch]:
        """``kubectl get ARGS --watch``, its events read with ``next_event``."""
        template = '{.type} {.object.metadata.name} {.object.metadata.resourceVersion}{"\\n"}'
        command = [self.kubectl_path, "--kubeconfig", str(kubeconfig or self.admin_kubeconfig),
                   "--cache-dir", str(self.workdir / "kubectl-cache"), "get", *args, "--watch",
                   "--output-watch-events", "-o", f"jsonpath={template}"]
        watch = KubectlWatch(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, env=_without_kubeconfig()))
        try:
            yield watch
        finally:
            watch.close()

    def issue_token(self, namespace: str, name: str) -> str:
        """A bearer token for ServiceAccount ``namespace/name`` (the server re-reads the file)."""
        token = secrets.token_urlsafe(24)
        groups = f"system:serviceaccounts,system:serviceaccounts:{namespace}"
        with self.token_file.open("a") as tokens:
            tokens.write(f'{token},system:serviceaccount:{namespace}:{name},{secrets.token_hex(8)},"{groups}"\n')
        return token

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name``. The
        ServiceAccount object itself is not required (as with any token the server trusts)."""
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        user = {"token": self.issue_token(namespace, name)}
        _write_kubeconfig(path, self.server, self.certs.ca_pem, f"{namespace}-{name}", user, namespace)
        return path

    def audit_events(self, user: str | None = None) -> list[dict]:
        """The audit log's events (stage ResponseComplete), of one user if given."""
        events = [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]
        return [e for e in events if user is None or e.get("user", {}).get("username") == user]

    def stop(self) -> None:
        """Stops the server, then etcd: SIGTERM, and SIGKILL after 15 s."""
        for process in reversed(self.processes):
            _stop(process)
        self.processes.clear()


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    name: str
    resource_version: str


class KubectlWatch:
    """The events a running ``kubectl get --watch`` prints, read on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: queue.Queue[WatchEvent | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            parts = line.split()
            if len(parts) == 3:
                self.events.put(WatchEvent(*parts))
        self.events.put(None)

    def next_event(self, match: Callable[[WatchEvent], bool] = lambda _: True, timeout: float = 20) -> WatchEvent:
        """The next event that ``match`` accepts; AssertionError after ``timeout`` s or at the end."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"kubectl watch ended: {self.process.stderr.read()}")
            if match(event):
                return event
        raise AssertionError(f"no matching watch event within {timeout:.0f} s")

    def close(self) -> None:
        _stop(self.process)


@contextmanager
def running_cluster(workdir: Path, log: Callable[[str], None] | None = None) -> Iterator[KubeCluster]:
    cluster = start_cluster(workdir, log)
    try:
        yield cluster
    finally:
        cluster.stop()


def start_cluster(workdir: Path, log: Callable[[str], None] | None = None) -> KubeCluster:
    """Builds (or reuses) the server, starts etcd and the server, waits until ready."""
    log = log or (lambda message: print(f"[kube] {message}", flush=True))
    started = time.monotonic()
    binary = ensure_server(log=log)
    etcd_binary = ensure_tool("etcd", "etcd-server", log=log)
    kubectl_path = os.environ.get("MT5FLEET_KUBECTL") or ensure_tool("kubectl", "kubectl", log=log)
    workdir.mkdir(parents=True, exist_ok=True)
    certs = make_certs(workdir / "pki")
    cluster = KubeCluster(workdir=workdir, server="", certs=certs, kubectl_path=kubectl_path,
                          admin_kubeconfig=workdir / "admin.kubeconfig", audit_log=workdir / "audit.log",
                          token_file=workdir / "tokens.csv")
    cluster.token_file.write_text("")
    (workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
    try:
        etcd_url = _start_etcd(cluster, etcd_binary)
        _start_apiserver(cluster, binary, etcd_url)
    except BaseException:
        cluster.stop()
        raise
    admin = {"client-certificate-data": certs.admin_cert_b64, "client-key-data": certs.admin_key_b64}
    _write_kubeconfig(cluster.admin_kubeconfig, cluster.server, certs.ca_pem, "admin", admin, "default")
    cluster.operator_kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
    log(f"API server ready at {cluster.server} in {time.monotonic() - started:.1f} s (workdir {workdir})")
    return cluster


def _start_etcd(cluster: KubeCluster, etcd: str) -> str:
    client, peer = _free_ports(2)
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    command = [etcd, "--name", "test", "--data-dir", str(cluster.workdir / "etcd"),
               "--listen-client-urls", url, "--advertise-client-urls", url,
               "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
               "--initial-cluster", f"test={peer_url}", "--logger", "zap", "--log-level", "warn"]
    process = _spawn(command, cluster.workdir / "etcd.log")
    cluster.processes.append(process)
    _wait_until(lambda: _get(f"{url}/health").get("health") == "true", process,
                cluster.workdir / "etcd.log", "etcd")
    return url


def _start_apiserver(cluster: KubeCluster, binary: Path, etcd_url: str) -> None:
    (port,) = _free_ports(1)
    cluster.server = f"https://127.0.0.1:{port}"
    pki = cluster.certs
    command = [str(binary), "--etcd-servers", etcd_url, "--bind-address", "127.0.0.1", "--secure-port", str(port),
               "--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
               "--client-ca-file", str(pki.ca_cert), "--token-auth-file", str(cluster.token_file),
               "--audit-log-path", str(cluster.audit_log),
               "--audit-policy-file", str(cluster.workdir / "audit-policy.yaml")]
    log_path = cluster.workdir / "kube-apiserver.log"
    process = _spawn(command, log_path)
    cluster.processes.append(process)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    _wait_until(lambda: _get(f"{cluster.server}/readyz", context, text=True) == "ok", process, log_path,
                "kube-apiserver")


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, log_path: Path, name: str,
                timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"{name} exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if ready():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise ClusterError(f"{name} not ready after {timeout:.0f} s:\n{_tail(log_path)}")


def _get(url: str, context: ssl.SSLContext | None = None, text: bool = False):
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        body = response.read().decode()
    return body if text else json.loads(body)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, then released)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _without_kubeconfig() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}


def _write_kubeconfig(path: Path, server: str, ca_pem: bytes, user_name: str, user: dict, namespace: str) -> None:
    """A kubeconfig (JSON, which kubectl and client libraries read like YAML)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": user_name,
        "clusters": [{"name": "mt5fleet-test", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": user_name, "context": {"cluster": "mt5fleet-test", "user": user_name,
                                                     "namespace": namespace}}],
    }
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)
