"""For the end-to-end operator tests on the real API server (kube_harness): a namespace set
up as the chart would (the operator's RBAC, the MT5-password Secrets, the worker
Deployment), a nats-server in JWT operator mode, and ``mt5fleet operator`` as a separate
OS process on a ServiceAccount token.

Import from a test module as ``from operator_process import OperatorProcess`` (conftest
puts this folder on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from waiting import eventually

from mt5fleet.operator.adapters.nats_accounts import TrustChain, create_trust_chain, write_creds
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

REPO = Path(__file__).resolve().parents[1]
RBAC_FILE = REPO / "deploy" / "rbac" / "operator-role.yaml"
CRDS = REPO / "deploy" / "helm" / "mt5fleet" / "crds"
EXAMPLES = REPO / "examples"
ACCOUNT = "mt5fleet-operator"
WORKERS = "mt5fleet-adjust"
LEASE = "mt5fleet-operator"


def rbac_for(namespace: str) -> list[dict]:
    """deploy/rbac/operator-role.yaml moved to ``namespace`` (its header says how), with
    the cluster-scoped names suffixed so that tests in several namespaces coexist."""
    # Not its Namespace: the test makes its own.
    docs = [doc for doc in yaml.safe_load_all(RBAC_FILE.read_text()) if doc and doc["kind"] != "Namespace"]
    for doc in docs:
        meta = doc["metadata"]
        if "namespace" in meta:
            meta["namespace"] = namespace
        else:
            meta["name"] = f"{meta['name']}-{namespace}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{namespace}"
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return docs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_deployment() -> dict:
    labels = {"app.kubernetes.io/name": WORKERS}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": WORKERS, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "adjust", "image": "mt5fleet:test"}]}}}}


def prepare_namespace(cluster, namespace: str) -> None:
    """What an installation puts in the namespace before the operator starts."""
    cluster.kubectl("create", "namespace", namespace)
    documents = [*rbac_for(namespace), worker_deployment()]
    listed = {"apiVersion": "v1", "kind": "List", "items": documents}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(listed))
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "secrets.yaml"))


def operator_kubeconfig(cluster, namespace: str, folder: Path, name: str) -> Path:
    """A kubeconfig of its own (its own token, so the audit log tells replicas apart by
    ``user.uid``) for ServiceAccount ``namespace/mt5fleet-operator``."""
    path = folder / f"{name}.kubeconfig"
    path.write_text(cluster.service_account_kubeconfig(namespace, ACCOUNT).read_text())
    path.chmod(0o600)
    return path


def token_uid(cluster, kubeconfig: Path) -> str:
    """The uid the server knows the kubeconfig's token by (kube_harness's token file)."""
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    for line in cluster.token_file.read_text().splitlines():
        fields = line.split(",")
        if fields[0] == token:
            return fields[2]
    raise AssertionError("token not in the server's token file")


@dataclass(frozen=True)
class NatsForOperator:
    url: str
    trust: Path
    creds: Path
    chain: TrustChain


@contextlib.contextmanager
def nats_for_operator(folder: Path) -> Iterator[NatsForOperator]:
    """A nats-server in JWT operator mode with the fleet's streams and buckets, and the
    trust chain and service credentials ``mt5fleet operator`` is started with."""
    from conftest import _bootstrap_as

    chain = create_trust_chain()
    folder.mkdir(parents=True, exist_ok=True)
    with EmbeddedNats(server_name="mt5fleet-test-e2e", store_dir=folder / "store",
                      operator=chain.server_mode()) as server:
        # On a thread of its own: the caller may be inside an event loop (an async test).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _bootstrap_as(server.url, chain.service_user.creds_text)).result()
        trust = folder / "trust.json"
        with os.fdopen(os.open(trust, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(chain.to_json())
        creds = write_creds(folder / "service.creds", chain.service_user)
        yield NatsForOperator(url=server.url, trust=trust, creds=creds, chain=chain)


class OperatorProcess:
    """``mt5fleet operator`` in cluster mode, a child process with its log in a file."""

    def __init__(self, name: str, nats: NatsForOperator, namespace: str, kubeconfig: Path, folder: Path,
                 *extra: str) -> None:
        self.name, self.kubeconfig = name, kubeconfig
        self.log_path = folder / f"{name}.log"
        self.http_port = free_port()   # /metrics and the probes, served by followers too
        command = [sys.executable, "-m", "mt5fleet.launcher.cli", "operator", "--nats", nats.url,
                   "--creds", str(nats.creds), "--trust", str(nats.trust), "--namespace", namespace,
                   "--kubeconfig", str(kubeconfig), "--worker-deployment", WORKERS,
                   "--http-port", str(self.http_port), "--lease-duration", "4", "--lease-renew", "1", *extra]
        env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        env.update(POD_NAME=name, PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=folder)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http_get(self, path: str) -> tuple[int, str] | None:
        """(status, body) of ``GET path`` on the process's HTTP port; None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return None

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled sample on /metrics; None while it does not answer."""
        answer = self.http_get("/metrics")
        if answer is None or answer[0] != 200:
            return None
        for line in answer[1].splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no clean-up, no Lease release."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and the exit code (kopf stops gracefully, the Lease is released)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.log()[-3000:]}") from None
        return self.process.returncode


# ---------------------------------------------------------------------- reading the cluster in e2e tests
START_S = 60.0       # a process start: imports, kopf's start-up, NATS, the first reconcile
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def get(cluster, *args: str) -> dict | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)


def phase(cluster, namespace: str, name: str) -> tuple[str | None, int | None]:
    body = get(cluster, "tradingclient", name, "-n", namespace) or {}
    status = body.get("status") or {}
    return status.get("phase"), status.get("observedGeneration")


def holder(cluster, namespace: str) -> str:
    lease = get(cluster, "lease", LEASE, "-n", namespace) or {}
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def operator_events(cluster, namespace: str) -> list[dict]:
    return cluster.audit_events(user=f"system:serviceaccount:{namespace}:{ACCOUNT}")


def what(event: dict) -> tuple[str, str, str]:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]


async def until(read, what_: str, timeout: float = START_S, processes: tuple[OperatorProcess, ...] = ()):
    """``eventually`` that shows the operators' logs when it times out."""
    def describe() -> str:
        logs = "\n".join(f"--- {p.name} (alive: {p.alive()})\n{p.log()[-4000:]}" for p in processes)
        return f"{what_}\n{logs}"

    return await eventually(read, describe, timeout, interval=0.25)
